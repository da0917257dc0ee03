"""helpers.tuning: the recommender follows the guidelines and fits its budget, its memory estimate
matches built indexes, the tuner finds the known cheapest setting, the Pareto front is right."""

import math

import faiss
import numpy as np
import pytest

from helpers.indexes import blas_threshold, layers
from helpers.tuning import (NoIndexFits, Recommendation, _without_own, estimate_memory, measure_settings,
                            pareto_front, parse_bytes, recommend, tune, tune_on_own_vectors)

NS = (1_000, 5_000, 30_000, 100_000, 1_000_000, 20_000_000, 1_000_000_000)
DS = (64, 100, 1280, 4096)
FRACTIONS = (None, 2.0, 1.0, 0.5, 0.25, 1 / 16, 1 / 64, 1e-4)   # of Flat's memory (n x 4d)


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("d", DS)
def test_recommend_fits_the_budget_and_faiss_accepts_the_string(n, d):
    for fraction in FRACTIONS:
        budget = None if fraction is None else fraction * n * 4 * d
        try:
            rec = recommend(n, d, budget, 0.95, "cosine")
        except NoIndexFits as err:
            assert budget is not None and "raise the budget" in str(err)
            # refused only near or below the least any offered index needs: an 8-byte id and a 4-byte
            # code a vector, and a 16-centroid codebook
            assert budget < 1.5 * (n * 12 + 16 * 4 * d)
            continue
        assert isinstance(rec, Recommendation)
        assert budget is None or rec.estimated_bytes <= budget
        assert rec.estimated_bytes == estimate_memory(rec.factory, n, d)
        index = faiss.index_factory(d, rec.factory, faiss.METRIC_INNER_PRODUCT)   # built with d only, not trained
        assert index.metric_type == faiss.METRIC_INNER_PRODUCT
        assert 0 <= rec.n_train <= n
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            if n < 1_000_000 and ivf.nlist * 39 <= n // 4:
                assert 4 * math.sqrt(n) / 2 <= ivf.nlist <= 16 * math.sqrt(n), "nlist near 4*sqrt(N)..16*sqrt(N)"
            assert rec.n_train >= 39 * ivf.nlist, "at least 39 training points a centroid"
            assert rec.n_train <= max(256 * ivf.nlist, 256 * 256), "at most 256 a centroid"
            assert rec.param == "nprobe" and max(rec.values) <= ivf.nlist
            if n >= 1_000_000:
                assert "_HNSW32" in rec.factory, "millions of vectors: an HNSW coarse quantiser"
        for layer in layers(index):
            if isinstance(layer, (faiss.IndexPQ, faiss.IndexIVFPQ)):
                assert layer.d % layer.pq.M == 0, "m divides the (reduced) dimension"
                if layer.pq.nbits == 8:
                    assert rec.n_train >= 256 * 39, "8-bit PQ trains on at least 256 x 39 vectors"
                assert not layer.do_polysemous_training, "np: no polysemous training (ht is never used; it is slow)"
        if rec.factory == "IDMap,HNSW32,Flat":
            assert rec.param == "efSearch"




def test_recommend_follows_the_guidelines_order():
    assert recommend(5_000, 128, None).factory == "IDMap,Flat"                     # small N: exact
    assert recommend(10**6, 1280, None, 0.999).factory == "IDMap,Flat"             # near-exact target
    assert recommend(100_000, 128, None).factory == "IDMap,HNSW32,Flat"            # lots of RAM, low d
    assert "PCA256,HNSW32,RFlat" in recommend(100_000, 1280, None).factory         # high d: reduced graph + re-rank
    flat = 100_000 * 4 * 1280
    assert recommend(100_000, 1280, 1.02 * flat).factory.endswith(",Flat")         # full vectors, no graph: IVF
    assert recommend(100_000, 1280, 1.02 * flat).param == "nprobe"
    assert recommend(100_000, 1280, flat / 4).factory.endswith("SQ6")              # tight: fewer bits a dimension
    assert recommend(100_000, 1280, flat / 16).factory == "OPQ128_512,IVF1265,PQ128np"  # tighter: OPQ-rotated PQ
    assert recommend(100_000, 128, 100_000 * 4 * 128 / 16).factory.startswith("OPQ")  # low d: OPQ + few bytes
    assert recommend(100_000, 1280, flat / 1.9).factory.endswith("SQfp16")
    assert recommend(100_000, 1280, flat / 2.5).factory.endswith("SQ8")
    assert recommend(10**8, 96, None).factory.startswith("IVF1048576_HNSW32")     # too many for HNSW


def test_recommend_bad_input_says_what_is_wrong():
    with pytest.raises(ValueError, match="positive integers"):
        recommend(0, 128)
    with pytest.raises(ValueError, match="recall_target"):
        recommend(1000, 128, None, 1.5)
    with pytest.raises(ValueError, match="metric"):
        recommend(1000, 128, None, 0.9, "hamming")
    with pytest.raises(ValueError, match="memory budget"):
        recommend(1000, 128, "lots")
    with pytest.raises(NoIndexFits, match="needs about"):
        recommend(10**6, 128, "1MB")


def test_budget_strings():
    assert parse_bytes("200MB") == 200e6
    assert parse_bytes("2 GiB") == 2 * 1024 ** 3
    assert parse_bytes(1234) == 1234
    assert parse_bytes(None) == math.inf
    with pytest.raises(ValueError):
        parse_bytes("-5MB")


@pytest.mark.parametrize("factory,n,d", [
    ("IDMap,Flat", 3000, 128), ("IDMap,HNSW32,Flat", 3000, 128), ("IDMap,HNSW8,Flat", 3000, 64),
    ("IVF32,Flat", 3000, 128), ("IVF32_HNSW32,Flat", 3000, 128), ("IVF32,SQ8", 3000, 128),
    ("IVF32,SQ6", 3000, 100), ("IVF32,SQ4", 3000, 128),
    ("IVF32,SQfp16", 3000, 100), ("IVF16,PQ16np", 10_000, 64), ("OPQ8_32,IVF16,PQ8np", 10_000, 64),
    ("PCA32,IVF16,SQ8", 3000, 128), ("IDMap,PCA32,HNSW16,RFlat", 3000, 256), ("IDMap,PQ8x6", 3000, 64),
])
def test_estimate_memory_matches_the_built_index(factory, n, d):
    """Within 5% plus 64 KiB of faiss.serialize_index's size."""
    x = np.random.default_rng(0).standard_normal((n, d)).astype("float32")
    faiss.normalize_L2(x)
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    with blas_threshold(0):          # PQ's k-means on 4-d sub-vectors, on BLAS (helpers.indexes)
        index.train(x)
    index.add_with_ids(x, np.arange(n, dtype="int64") * 3)
    built = faiss.serialize_index(index).nbytes
    assert abs(estimate_memory(factory, n, d) - built) <= 0.05 * built + 65536


def test_estimate_memory_refuses_strings_it_does_not_model():
    with pytest.raises(ValueError, match="cannot read"):
        estimate_memory("IVF16,LSH", 1000, 64)


def _known_ivf():
    """An IVF whose one query has its true top 10 in cells 0, 1, 2 (5 + 3 + 2 of them): recall@10 is
    0.5 at nprobe 1, 0.8 at nprobe 2, 1.0 from nprobe 3: the cheapest nprobe of (1, 2, 4, ...) for each
    target is known."""
    quantizer = faiss.IndexFlatL2(2)
    quantizer.add(np.array([[j, 0] for j in range(16)], dtype="float32"))
    index = faiss.IndexIVFFlat(quantizer, 2, 16)
    near = [(0, y) for y in (0.1, 0.2, 0.3, 0.4, 0.5)] + [(1, y) for y in (0.1, 0.2, 0.3)] + [(2, 0.1), (2, 0.2)]
    far = [(j, 50 + y) for j in range(16) for y in range(5)]   # in every cell, far from the query
    xb = np.array(near + far, dtype="float32")
    index.add_with_ids(xb, np.arange(len(xb), dtype="int64") + 100)
    query = np.zeros((1, 2), dtype="float32")
    truth = np.arange(10, dtype="int64")[None, :] + 100
    return index, query, truth


@pytest.mark.parametrize("target,nprobe", [(0.5, 1), (0.7, 2), (0.8, 2), (0.9, 4), (1.0, 4)])
def test_tune_finds_the_cheapest_nprobe(target, nprobe):
    index, query, truth = _known_ivf()
    result = tune(index, query, truth, target)
    assert result.reached and result.setting == f"nprobe={nprobe}"
    assert index.nprobe == nprobe, "the setting found is left on the index"
    assert [r["setting"] for r in result.rows] == [f"nprobe={p}" for p in (1, 2, 4)[:len(result.rows)]]


def test_tune_says_when_it_cannot():
    index, query, truth = _known_ivf()
    result = tune(index, query, truth, 0.95, "nprobe", (1, 2))
    assert not result.reached and result.setting == "nprobe=2" and result.recall == pytest.approx(0.8)
    assert "no setting tried reaches" in result.message
    with pytest.raises(ValueError, match="recall_target"):
        tune(index, query, truth, 0)


def test_tune_asks_a_margin_of_one_standard_error():
    index, query, truth = _known_ivf()
    index.nprobe = 1
    other_truth = index.search(query, 10)[1]          # a second query that nprobe=1 answers exactly
    queries, truths = np.vstack([query, query]), np.vstack([truth, other_truth])
    # at nprobe=1 the two queries score 0.5 and 1.0: mean 0.75, standard error std/sqrt(2) = 0.25
    plain = tune(index, queries, truths, 0.6, "nprobe", (1,), margin=0)
    assert plain.reached and plain.setting == "nprobe=1" and plain.recall == pytest.approx(0.75)
    careful = tune(index, queries, truths, 0.6, "nprobe", (1,))
    assert not careful.reached and careful.se == pytest.approx(0.25)
    assert careful.rows[0]["standard error"] == pytest.approx(0.25)
    assert "margin of 1 standard error" in careful.message and "0.750 ± 0.250" in careful.message
    assert tune(index, queries, truths, 0.49, "nprobe", (1,)).reached, "0.75 - 0.25 reaches 0.49"
    with pytest.raises(ValueError, match="margin"):
        tune(index, queries, truths, 0.6, "nprobe", (1,), margin=-1)


def test_tune_with_a_fixed_parameter_and_an_hnsw_default():
    rng = np.random.default_rng(1)
    xb = rng.standard_normal((2000, 16)).astype("float32")
    xq = rng.standard_normal((20, 16)).astype("float32")
    flat = faiss.IndexFlatL2(16)
    flat.add(xb)
    truth = flat.search(xq, 10)[1]
    hnsw = faiss.index_factory(16, "HNSW8,RFlat")
    hnsw.train(xb)
    hnsw.add(xb)
    result = tune(hnsw, xq, truth, 0.98, "efSearch", (16, 64, 256), fixed="k_factor_rf=8")
    assert result.reached and result.setting.startswith("k_factor_rf=8,efSearch=")
    assert faiss.downcast_index(hnsw).k_factor == 8
    plain = faiss.index_factory(16, "HNSW8")
    plain.add(xb)
    default = tune(plain, xq, truth, 0.9)          # no param given: efSearch over its default range
    assert default.setting.startswith("efSearch=") and default.rows[0]["setting"] == "efSearch=16"


def test_without_own_drops_each_rows_own_id_only():
    found = np.array([[7, 3, 5], [4, 6, 8], [9, -1, -1]])
    assert _without_own(found, [3, 1, 9], 2).tolist() == [[7, 5], [4, 6], [-1, -1]]


def test_tune_on_own_vectors_gives_a_vector_no_credit_for_finding_itself():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3000, 16)).astype("float32")
    faiss.normalize_L2(x)
    ids = np.arange(len(x), dtype="int64") * 3 + 1          # ids that are not row numbers
    flat = faiss.IndexIDMap(faiss.IndexFlatIP(16))
    flat.add_with_ids(x, ids)
    exact = tune_on_own_vectors(flat, x, ids, 1.0)
    assert exact.reached and exact.setting is None and exact.recall == 1.0
    ivf = faiss.index_factory(16, "IVF64,Flat", faiss.METRIC_INNER_PRODUCT)
    ivf.train(x)
    ivf.add_with_ids(x, ids)
    own = tune_on_own_vectors(ivf, x, ids, 0.9, n_queries=200)
    lower = [r["recall@10"] - r["standard error"] for r in own.rows]   # tune's margin: one standard error
    assert own.reached and lower[-1] >= 0.9 > lower[-2]
    assert own.setting == own.rows[-1]["setting"] and ivf.nprobe == int(own.setting.split("=")[1])
    # the same queries with themselves counted: each one finds itself first, which inflates recall
    q = x[np.random.default_rng(0).choice(len(x), 200, replace=False)]
    truth = flat.search(q, 10)[1]
    naive = tune(ivf, q, truth, 1.0, "nprobe", (1,))
    assert naive.recall > own.rows[0]["recall@10"] + 0.02
    with pytest.raises(ValueError, match="more than 10 vectors"):
        tune_on_own_vectors(flat, x[:10], ids[:10], 0.9)


def test_measure_settings_rows_carry_extra_columns():
    index, query, truth = _known_ivf()
    rows = measure_settings(index, ["nprobe=1", "nprobe=2"], query, truth, 10, 1, index="IVF16", nlist=16)
    assert [(r["setting"], r["recall@10"], r["index"], r["nlist"]) for r in rows] == [
        ("nprobe=1", 0.5, "IVF16", 16), ("nprobe=2", 0.8, "IVF16", 16)]
    assert all(r["QPS"] > 0 for r in rows) and index.nprobe == 2


def test_pareto_front():
    rows = [{"recall@10": 0.9, "QPS": 100}, {"recall@10": 0.8, "QPS": 50},    # dominated by the first
            {"recall@10": 0.95, "QPS": 60}, {"recall@10": 0.7, "QPS": 300}, {"recall@10": 0.95, "QPS": 40}]
    front = pareto_front(rows)
    assert [(r["recall@10"], r["QPS"]) for r in front] == [(0.7, 300), (0.9, 100), (0.95, 60)]
