"""helpers.evaluate and helpers.presentation: metric definitions, ground truth, monotone sweeps, tables."""

import faiss
import matplotlib
import numpy as np
import pytest

from helpers import evaluate as ev, indexes as ix
from helpers.distractors import synthetic_features
from helpers.presentation import Table
from tests.conftest import build_index

pytestmark = pytest.mark.usefixtures("faiss_one_thread")

matplotlib.use("Agg")
D, K = 48, 10


@pytest.fixture(scope="module")
def data():
    x, _ = synthetic_features(4100, D, n_classes=20, seed=2, within=0.8)
    xb, xq = x[:4000], x[4000:]
    ids = np.arange(4000, dtype=np.int64) * 3 + 1
    return xb, ids, xq, ev.ground_truth(xb, ids, xq, K)


def test_metric_definitions_on_hand_made_results():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    found = np.array([[3, 9, 1], [-1, -1, 4]])
    assert ev.recall_at_k(found, truth, 3) == pytest.approx(3 / 6)   # 2 of 3, then 1 of 3
    assert ev.recall_at_k(found, truth, 1) == 0.0                    # top-1 only: 3 is not 1, -1 is not 4
    assert ev.recalls_at_k(found, truth, 3) == pytest.approx([2 / 3, 1 / 3])   # each query's, mean above
    with pytest.raises(ValueError, match="recall@3"):
        ev.recalls_at_k(found[:0], truth[:0], 3)                        # no queries: no recall
    assert ev.one_recall_at_1(np.array([[1, 7], [5, 4]]), truth) == 0.5
    with pytest.raises(ValueError, match="recall@5"):
        ev.recall_at_k(found, truth, 5)


def test_precision_by_label_drops_the_query_itself():
    labels = {10: "cat", 11: "cat", 12: "dog", 13: "cat"}
    found = np.array([[10, 11, 12, 99]])           # 10 is the query; 99 (a distractor) has no label
    assert ev.precision_at_k(found, ["cat"], labels, 2, query_ids=[10]) == 0.5    # 11 yes, 12 no
    assert ev.precision_at_k(found, ["cat"], labels, 3, query_ids=[10]) == pytest.approx(1 / 3)
    assert ev.precision_at_k(found, ["cat"], labels, 2) == 1.0                    # query not in database
    with pytest.raises(ValueError, match="k \\+ 1"):
        ev.precision_at_k(found, ["cat"], labels, 4, query_ids=[10])


def test_ground_truth_is_exact_search(data):
    """Checked against brute force in numpy, for both metrics (they rank these raw vectors differently)."""
    xb, ids, xq, truth = data
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)   # noqa: E731
    cos = unit(xq) @ unit(xb).T
    assert truth.metric == "cosine"
    assert ev.recall_at_k(truth, ids[np.argsort(-cos, axis=1)[:, :K]], K) == 1.0
    np.testing.assert_allclose(truth.scores, -np.sort(-cos, axis=1)[:, :K], rtol=1e-4)
    l2 = ev.ground_truth(xb, ids, xq, K, metric="l2")
    d2 = ((xq[:, None, :] - xb[None, :, :]) ** 2).sum(-1)
    assert ev.recall_at_k(l2, ids[np.argsort(d2, axis=1)[:, :K]], K) == 1.0
    assert l2.metric == "l2" and not np.array_equal(l2.ids, truth.ids)
    with pytest.raises(ValueError, match="cosine"):
        ev.ground_truth(xb, ids, xq, K, metric="dot")


def test_ivf_recall_never_falls_as_nprobe_grows(data):
    xb, ids, xq, truth = data
    index = build_index("IVF64,Flat", xb, ids)
    recalls = ev.sweep("ivf", index, xq, truth, "nprobe", [1, 2, 4, 8, 16, 32, 64], K, repeats=1).column(f"recall@{K}")
    assert all(a <= b for a, b in zip(recalls, recalls[1:])), recalls
    assert recalls[0] < 0.9 and recalls[-1] == 1.0    # visiting every list is exact search


def test_hnsw_recall_never_falls_as_ef_search_grows(data):
    xb, ids, xq, truth = data
    graph = faiss.IndexHNSWFlat(D, 4, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = 8                # a deliberately weak graph, so recall has room to grow
    index = faiss.IndexIDMap(graph)
    index.add_with_ids(ix.normalize(xb), ids)
    recalls = ev.sweep("hnsw", index, xq, truth, "efSearch", [10, 20, 40, 80, 160], K, repeats=1).column(f"recall@{K}")
    assert all(a <= b for a, b in zip(recalls, recalls[1:])), recalls
    assert recalls[0] < recalls[-1]


def test_memory_is_the_serialized_size(data):
    xb, ids, _, _ = data
    flat = ev.memory_bytes(build_index("IDMap,Flat", xb, ids))
    assert len(xb) * (D * 4 + 8) <= flat < len(xb) * (D * 4 + 8) + 10_000   # vectors + int64 ids + header
    pq = ev.memory_bytes(build_index("IDMap,PQ8x4", xb, ids))                # 4 bytes of codes + 8 of id
    assert len(xb) * (4 + 8) <= pq < len(xb) * (4 + 8) + 50_000              # + the codebooks


def test_measure_row_and_qps(data):
    xb, ids, xq, truth = data
    index = build_index("IVF64,Flat", xb, ids)
    row = ev.measure("ivf", index, xq, truth, K, params="nprobe=8", repeats=1, single_queries=5,
                     train_s=1.5, add_s=0.25)
    assert faiss.extract_index_ivf(index).nprobe == 8, "measure sets the parameters it is given"
    assert row["index"] == "ivf" and row["setting"] == "nprobe=8"
    assert row[f"recall@{K}"] == ev.recall_at_k(ix.search(index, xq, K), truth, K) < 1.0
    assert row["memory MB"] == ev.memory_bytes(index) / 1e6
    assert (row["train s"], row["add s"]) == (1.5, 0.25) and {"QPS", "QPS 1-by-1"} <= set(row)


def test_qps_counts_queries_per_second_of_the_calls_made():
    calls = []

    class Slow:
        d, metric_type = 4, faiss.METRIC_L2

        def search(self, x, k):
            calls.append(len(x))
            __import__("time").sleep(0.01)

    q = np.zeros((5, 4), np.float32)
    assert ev.qps(Slow(), q, 1, repeats=1) == pytest.approx(5 / 0.01, rel=0.5)          # one call of 5
    assert ev.qps(Slow(), q, 1, repeats=1, one_at_a_time=True) == pytest.approx(5 / 0.05, rel=0.5)
    assert calls == [5, 1, 1, 1, 1, 1]


def test_timer_times_its_block():
    with ev.Timer() as t:
        __import__("time").sleep(0.02)
    assert 0.02 <= t.seconds < 5


def test_table_text_html_and_lookup():
    table = Table([{"index": "a<b", "recall@10": 0.5, "QPS": 12345.6}, {"index": "c", "recall@10": 0.97}], "t")
    text = table.to_text().splitlines()
    assert text[0] == "t" and "recall@10" in text[1] and "12,346" in text[3] and "0.970" in text[4]
    assert "a&lt;b" in table._repr_html_() and "<caption>t</caption>" in table._repr_html_()
    assert table.first(lambda r: r["recall@10"] >= 0.95)["index"] == "c"
    assert table.first(lambda r: r["recall@10"] > 1) is None
    assert table.column("QPS") == [12345.6, None] and len(table) == 2


def test_plot_recall_qps_draws_one_line_per_index():
    from helpers.presentation import plot_recall_qps

    table = Table([{"index": "ivf", "nprobe": p, "recall@10": r, "QPS": q}
                      for p, r, q in [(1, 0.6, 9000), (4, 0.9, 3000), (16, 0.99, 800)]]
                     + [{"index": "hnsw", "efSearch": 16, "recall@10": 0.95, "QPS": 4000}])
    ax = plot_recall_qps(table, label="nprobe", target=0.95)
    assert len(ax.lines) == 3                       # two indexes and the target line
    assert list(ax.lines[0].get_xdata()) == [0.6, 0.9, 0.99]
    assert ax.get_yscale() == "log" and len(ax.texts) == 3
    with pytest.raises(KeyError, match="recall@5"):
        plot_recall_qps(table, recall="recall@5")
