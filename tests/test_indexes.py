"""helpers.indexes: input checks, sizing advice, looking inside an index, search to paths; and the
Faiss behaviour the notebooks rely on (ParameterSpace reaching through wrappers, the BLAS switch)."""

import faiss
import numpy as np
import pytest

from helpers import indexes as ix
from helpers.distractors import synthetic_features
from helpers.manifest import Entry, Manifest
from tests.conftest import build_index

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
    index = build_index("IDMap,Flat", xb, ids)
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


# ---------------------------------------------------------------- sizing advice

@pytest.mark.parametrize("factory, need", [
    ("IVF100,Flat", 39 * 100), ("PQ8", 39 * 256), ("PQ8x4", 39 * 16), ("IVF16,PQ8", 39 * 256),
    ("OPQ8_16,IVF16,PQ8x4", 39 * 256), ("PCA16,Flat", 16), ("HNSW16", 1), ("Flat", 1),
])
def test_min_training_points_counts_every_trained_part(factory, need):
    assert ix.min_training_points(faiss.index_factory(D, factory)) == need


def test_nlist_advice():
    assert ix.nlist_range(100_000) == (1265, 5059)           # the guidelines' 4*sqrt(N) .. 16*sqrt(N)
    assert ix.suggest_nlist(100_000) == 1265                 # its low end
    assert ix.suggest_nlist(10_000) == 256                   # 4*sqrt(N) = 400 would leave k-means 25 points a centroid
    assert ix.suggest_nlist(5_000_000) == 65_536             # the guidelines' fixed sizes from 1M vectors
    assert ix.suggest_nlist(1_000_000) == 1_000_000 // 39    # ... capped by the 39 points as well
    for n in (1, 10, 1000, 24_336, 24_400, 10**7, 2 * 10**8):
        assert 1 <= ix.suggest_nlist(n) <= max(1, n // 39)


def test_training_sample_is_random_rows_in_order():
    x = np.arange(1000, dtype="float32").reshape(500, 2)
    sample = ix.training_sample(x, 100, seed=1)
    assert sample.shape == (100, 2) and sample.flags.c_contiguous
    rows = sample[:, 0] / 2
    assert np.all(np.diff(rows) > 0) and rows.max() > 400     # distinct rows, in order, not the first 100
    assert np.array_equal(ix.training_sample(x, 100, seed=1), sample)
    assert ix.training_sample(x, 900) is x


# ---------------------------------------------------------------- Faiss behaviour the course teaches

def test_parameter_space_reaches_through_wrappers():
    """Notebooks set search parameters with ParameterSpace, through IDMap, PreTransform and Refine."""
    ps = faiss.ParameterSpace()
    hnsw = faiss.IndexIDMap(faiss.index_factory(D, "PCA16,HNSW16,RFlat"))
    ps.set_index_parameters(hnsw, "efSearch=77,k_factor_rf=3")
    refine = faiss.downcast_index(hnsw.index)
    assert refine.k_factor == 3
    assert faiss.downcast_index(faiss.downcast_index(refine.base_index).index).hnsw.efSearch == 77
    ivf = faiss.IndexIDMap(faiss.index_factory(D, "OPQ8_16,IVF16,PQ8x4"))
    ps.set_index_parameters(ivf, "nprobe=5")
    assert faiss.extract_index_ivf(ivf).nprobe == 5 and "nprobe=5" in ix.describe(ivf)
    with pytest.raises(RuntimeError):
        ps.set_index_parameters(hnsw, "nprobe=4")            # an HNSW graph has no nprobe


# ---------------------------------------------------------------- ids, metrics, search

FACTORIES = ["IDMap,Flat", "IVF16,Flat", "IDMap,PQ8x4", "IVF16,PQ8x4", "IDMap,HNSW16",
             "IDMap,PCA16,HNSW16,RFlat", "PCA16,IVF16,Flat", "OPQ8_16,IVF16,PQ8x4", "IDMap,IVF16,PQ8x4,RFlat"]


@pytest.mark.parametrize("factory", FACTORIES)
def test_search_returns_manifest_ids(data, factory):
    xb, ids, xq = data
    index = build_index(factory, xb, ids)
    result = ix.search(index, xq, 10)
    assert result.ids.shape == result.scores.shape == (len(xq), 10)
    assert set(result.ids.ravel()) <= set(ids)
    if factory in ("IDMap,Flat", "IDMap,HNSW16"):   # a database vector's nearest neighbour is itself
        assert np.array_equal(ix.search(index, xb[:20], 1).ids[:, 0], ids[:20])


def test_search_gives_paths_from_the_manifest(data):
    xb, ids, xq = data
    entries = [Entry(int(i), f"img/{i}.jpg", "0" * 64, 1, 1, 1, "JPEG", "x") for i in ids]
    manifest = Manifest("/tmp", entries)
    index = build_index("IDMap,Flat", xb, ids)
    result = ix.search(index, xq, 3, manifest)
    assert result.paths[0] == [f"img/{i}.jpg" for i in result.ids[0]]
    assert ix.search(index, xq, 3).paths is None
    # ids the manifest lacks (distractors) have no path
    partial = Manifest("/tmp", [e for e in entries if e.id not in set(result.ids[0])])
    assert ix.search(index, xq, 3, partial).paths[0] == [None] * 3


def test_l2_scores_are_squared_distances(data):
    xb, ids, xq = data
    result = ix.search(build_index("IDMap,Flat", xb, ids, "l2"), xq[:5], 3)
    rows = {i: r for i, r in zip(ids, xb)}
    expected = [[np.sum((q - rows[i]) ** 2) for i in found] for q, found in zip(xq[:5], result.ids)]
    np.testing.assert_allclose(result.scores, expected, rtol=1e-4)
    assert result.metric == "l2"


def test_cosine_normalises_both_sides(data):
    xb, ids, xq = data
    index = build_index("IDMap,Flat", xb * 5.0, ids)        # database norms do not matter
    result = ix.search(index, xq[:5] * 3.0, 3)
    rows = {i: r for i, r in zip(ids, xb)}
    cos = [[q @ rows[i] / np.linalg.norm(q) / np.linalg.norm(rows[i]) for i in found]
           for q, found in zip(xq[:5], result.ids)]
    np.testing.assert_allclose(result.scores, cos, rtol=1e-4)
    assert result.metric == "cosine" and np.all(np.diff(result.scores, axis=1) <= 0)


def test_describe_names_every_layer():
    index = faiss.IndexIDMap(faiss.index_factory(D, "PCA16,HNSW16,RFlat"))
    text = ix.describe(index)
    for part in ("IndexIDMap", "IndexRefineFlat(k_factor=1.0)", "PCAMatrix(32->16)", "IndexHNSWFlat(M=16"):
        assert part in text, text


def test_empty_index_cannot_be_searched():
    with pytest.raises(ix.IndexParamError, match="empty"):
        ix.search(faiss.IndexFlatIP(D), np.zeros((1, D), np.float32), 1)


@pytest.mark.parametrize("factory", ["IVF16,PQ8x4", "IDMap,HNSW16"])
def test_same_data_and_seed_give_identical_results(factory):
    def run():
        x, _ = synthetic_features(2050, D, n_classes=8, seed=5)
        return ix.search(build_index(factory, x[:2000], np.arange(2000) + 100), x[2000:], 10)
    first, second = run(), run()
    assert np.array_equal(first.ids, second.ids) and np.array_equal(first.scores, second.scores)


def test_blas_threshold_is_set_inside_the_block_and_restored(data):
    xb, ids, xq = data
    index = build_index("IDMap,Flat", xb, ids, "l2")
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
