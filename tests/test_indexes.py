"""helpers.indexes: parameter checks, ids, metrics, search-time parameters, input errors."""

import warnings

import faiss
import numpy as np
import pytest

from helpers import indexes as ix
from helpers.distractors import synthetic_features
from helpers.manifest import Entry, Manifest

pytestmark = pytest.mark.usefixtures("faiss_one_thread")

D = 32


@pytest.fixture(scope="module")
def data():
    """3,000 database vectors with manifest-like ids (not row numbers) and 50 queries."""
    x, _ = synthetic_features(3050, D, n_classes=10, seed=1)
    ids = np.random.default_rng(0).permutation(3000).astype(np.int64) * 10 + 7
    return x[:3000], ids, x[3000:]


# ---------------------------------------------------------------- inputs

def test_as_float32_matrix_converts_to_float32_c_contiguous():
    x = np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4))
    out = ix.as_float32_matrix(x, 4)
    assert out.dtype == np.float32 and out.flags.c_contiguous and np.array_equal(out, x)
    assert ix.as_float32_matrix([[1, 2]]).dtype == np.float32


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 5), np.float32), "5 dimensions but the index has 4"),
    (np.zeros(4, np.float32), r"v\[None, :\]"),
    (np.zeros((1, 2, 4), np.float32), "2-d"),
    (np.array([["a", "b", "c", "d"]]), "must be numbers"),
    (np.array([[1, 2, 3, None]], dtype=object), "must be numbers"),
    (np.array([[1, 2, 3, np.nan]]), "NaN"),
])
def test_bad_vectors_give_a_clear_error(bad, match):
    with pytest.raises(ix.VectorError, match=match):
        ix.as_float32_matrix(bad, 4)


def test_query_of_wrong_dimension_or_dtype_is_refused(data):
    xb, ids, xq = data
    index = ix.build(ix.flat(D), xb, ids).index
    with pytest.raises(ix.VectorError, match="dimensions"):
        ix.search(index, xq[:, :-1], 5)
    with pytest.raises(ix.VectorError, match="numbers"):
        ix.search(index, xq.astype(str), 5)
    assert issubclass(ix.VectorError, ValueError)


def test_ids_are_checked():
    with pytest.raises(ix.IndexParamError, match="unique"):
        ix.as_ids([1, 1, 2], 3)
    with pytest.raises(ix.IndexParamError, match="3 integers"):
        ix.as_ids([1.0, 2.0, 3.0], 3)
    with pytest.raises(ix.IndexParamError, match="3 integers"):
        ix.as_ids([1, 2], 3)


# ---------------------------------------------------------------- parameter checks

@pytest.mark.parametrize("make, match", [
    (lambda: ix.pq(60, 7), r"m=7 does not divide d=60.*\[1, 2, 3, 4, 5, 6, 10"),
    (lambda: ix.ivf_pq(64, 16, 12), "does not divide"),
    (lambda: ix.pq(64, 8, nbits=0), "nbits"),
    (lambda: ix.pq(64, 8, nbits=17), "nbits"),
    (lambda: ix.ivf_flat(64, 0), "nlist"),
    (lambda: ix.ivf_flat(64, 2.5), "nlist"),
    (lambda: ix.flat(64, metric="dot"), "l2, cosine"),
    (lambda: ix.hnsw(64, M=1), "M=1"),
    (lambda: ix.hnsw(64, M=32, ef_construction=16), "below M=32"),
    (lambda: ix.hnsw(64, ef_search=0), "ef_search"),
    (lambda: ix.refine_flat(ix.flat(64)), "without IndexIDMap"),
    (lambda: ix.refine_flat(faiss.IndexFlatL2(64), k_factor=0.5), "k_factor"),
    (lambda: ix.with_pca(64, ix.flat(128)), "d=128"),
    (lambda: ix.with_opq(64, ix.ivf_pq(32, 4, 8), m=5), "does not divide"),
    (lambda: ix.from_factory(60, "PQ7"), "index_factory"),
    (lambda: ix.from_factory(64, "NoSuchIndex"), "index_factory"),
])
def test_builders_refuse_bad_parameters(make, match):
    with pytest.raises(ix.IndexParamError, match=match):
        make()


def test_training_size_is_checked(data):
    xb, ids, _ = data
    with pytest.raises(ix.IndexParamError, match="k-means cannot run"):
        ix.train(ix.ivf_flat(D, 100), xb[:50])
    with pytest.raises(ix.IndexParamError, match=r"3900 training vectors \(39 per k-means centroid\), got 3000.*nlist <= 76"):
        ix.build(ix.ivf_flat(D, 100), xb, ids)
    with pytest.raises(ix.IndexParamError, match="nbits <= 6"):
        ix.build(ix.pq(D, 8, nbits=8), xb, ids)
    assert ix.min_training_points(ix.ivf_pq(D, 16, 8, nbits=8)) == 39 * 256
    assert ix.min_training_points(ix.with_pca(D, ix.flat(16))) == 16
    # a learner may accept poorer centroids on purpose
    index = ix.ivf_flat(D, 100)
    ix.train(index, xb, min_per_centroid=20)
    assert index.is_trained


def test_nlist_advice():
    assert ix.nlist_range(100_000) == (1265, 2564)          # 4*sqrt(N) .. min(16*sqrt(N), N/39)
    assert ix.nlist_range(1_000_000) == (4000, 16000)
    assert ix.nlist_range(10_000) == (64, 256)               # small N: the training rule caps it
    for n in (1, 10, 1000, 24_336, 24_400, 10**7):
        lo, hi = ix.nlist_range(n)
        assert 1 <= lo <= hi <= max(1, n // 39)
        assert ix.suggest_nlist(n) == lo


def test_nlist_outside_the_advice_warns(data):
    xb, ids, _ = data
    lo, hi = ix.nlist_range(len(xb))
    with pytest.warns(ix.NlistWarning, match=f"advised range is {lo}..{hi}"):
        ix.build(ix.ivf_flat(D, 4), xb, ids)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ix.build(ix.ivf_flat(D, ix.suggest_nlist(len(xb))), xb, ids)


# ---------------------------------------------------------------- ids, metrics, search

BUILDERS = {
    "flat": lambda: ix.flat(D),
    "ivf_flat": lambda: ix.ivf_flat(D, 16),
    "pq": lambda: ix.pq(D, 8, nbits=4),
    "ivf_pq": lambda: ix.ivf_pq(D, 16, 8, nbits=4),
    "hnsw": lambda: ix.hnsw(D, 16, 64),
    "refine_flat": lambda: ix.refine_flat(faiss.IndexPQ(D, 8, 4)),
    "with_pca": lambda: ix.with_pca(D, ix.ivf_flat(16, 16)),
    "pca_hnsw_refine": lambda: ix.refine_flat(ix.with_pca(D, ix.hnsw(16, 16, 64, id_map=False)), k_factor=4),
    "factory_hnsw": lambda: ix.from_factory(D, "HNSW16"),
    "factory_refine": lambda: ix.from_factory(D, "IVF16,PQ8x4,RFlat"),
}


@pytest.mark.parametrize("name", BUILDERS)
def test_search_returns_manifest_ids(data, name):
    xb, ids, xq = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ix.NlistWarning)
        index = ix.build(BUILDERS[name](), xb, ids).index
    result = ix.search(index, xq, 10)
    assert result.ids.shape == result.scores.shape == (len(xq), 10)
    assert set(result.ids.ravel()) <= set(ids)
    if name in ("flat", "hnsw", "factory_hnsw"):   # a database vector's nearest neighbour is itself
        assert np.array_equal(ix.search(index, xb[:20], 1).ids[:, 0], ids[:20])


def test_search_gives_paths_from_the_manifest(data):
    xb, ids, xq = data
    entries = [Entry(int(i), f"img/{i}.jpg", "0" * 64, 1, 1, 1, "JPEG", "x") for i in ids]
    manifest = Manifest("/tmp", entries)
    result = ix.search(ix.build(ix.flat(D), xb, ids).index, xq, 3, manifest)
    assert result.paths[0] == [f"img/{i}.jpg" for i in result.ids[0]]
    assert ix.search(ix.build(ix.flat(D), xb, ids).index, xq, 3).paths is None
    # ids the manifest lacks (distractors) have no path
    partial = Manifest("/tmp", [e for e in entries if e.id not in set(result.ids[0])])
    assert ix.search(ix.build(ix.flat(D), xb, ids).index, xq, 3, partial).paths[0] == [None] * 3


def test_l2_scores_are_squared_distances(data):
    xb, ids, xq = data
    result = ix.search(ix.build(ix.flat(D), xb, ids).index, xq[:5], 3)
    rows = {i: r for i, r in zip(ids, xb)}
    expected = [[np.sum((q - rows[i]) ** 2) for i in found] for q, found in zip(xq[:5], result.ids)]
    np.testing.assert_allclose(result.scores, expected, rtol=1e-4)
    assert result.metric == "l2"


def test_cosine_normalises_both_sides(data):
    xb, ids, xq = data
    index = ix.build(ix.flat(D, "cosine"), xb * 5.0, ids).index   # database norms do not matter
    result = ix.search(index, xq[:5] * 3.0, 3)
    rows = {i: r for i, r in zip(ids, xb)}
    cos = [[q @ rows[i] / np.linalg.norm(q) / np.linalg.norm(rows[i]) for i in found]
           for q, found in zip(xq[:5], result.ids)]
    np.testing.assert_allclose(result.scores, cos, rtol=1e-4)
    assert result.metric == "cosine" and np.all(np.diff(result.scores, axis=1) <= 0)


def test_set_params_reaches_through_wrappers(data):
    xb, ids, _ = data
    hnsw = ix.hnsw(D, 16, 64)
    ix.set_params(hnsw, efSearch=77)
    assert faiss.downcast_index(hnsw.index).hnsw.efSearch == 77
    refine = ix.refine_flat(ix.ivf_pq(D, 16, 8, nbits=4))
    ix.set_params(refine, nprobe=5, k_factor=3)
    assert faiss.extract_index_ivf(refine).nprobe == 5
    assert faiss.downcast_index(refine.index).k_factor == 3
    assert "nprobe=5" in ix.describe(refine)
    with pytest.raises(ix.IndexParamError, match=r"no parameter 'nprobe'.*\['efSearch'\]"):
        ix.set_params(hnsw, nprobe=4)


def test_empty_index_cannot_be_searched():
    with pytest.raises(ix.IndexParamError, match="empty"):
        ix.search(ix.flat(D), np.zeros((1, D), np.float32), 1)


@pytest.mark.parametrize("make", [lambda: ix.ivf_pq(D, 16, 8, nbits=4), lambda: ix.hnsw(D, 16, 64)])
def test_same_data_and_seed_give_identical_results(make):
    def run():
        x, _ = synthetic_features(2050, D, n_classes=8, seed=5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ix.NlistWarning)
            index = ix.build(make(), x[:2000], np.arange(2000) + 100).index
        return ix.search(index, x[2000:], 10)
    first, second = run(), run()
    assert np.array_equal(first.ids, second.ids) and np.array_equal(first.scores, second.scores)


def test_blas_threshold_is_set_inside_the_block_and_restored(data):
    xb, ids, xq = data
    index = ix.build(ix.flat(D), xb, ids).index
    before = faiss.cvar.distance_compute_blas_threshold
    plain = ix.search(index, xq[:3], 10)            # 3 x 32 is far below the threshold: no BLAS
    with pytest.raises(RuntimeError), ix.blas_threshold(0):
        assert faiss.cvar.distance_compute_blas_threshold == 0
        forced = ix.search(index, xq[:3], 10)
        raise RuntimeError("leaving the block by an exception restores it too")
    assert faiss.cvar.distance_compute_blas_threshold == before
    assert np.array_equal(forced.ids, plain.ids)    # same neighbours; distances up to rounding
    np.testing.assert_allclose(forced.scores, plain.scores, rtol=1e-4, atol=1e-4)
    assert not np.array_equal(forced.scores, plain.scores) or before == 0   # it did take another path
