"""helpers.evaluate and helpers.plots: metric definitions, ground truth, monotone sweeps, tables."""

import faiss
import matplotlib
import numpy as np
import pytest

from helpers import evaluate as ev, indexes as ix
from helpers.distractors import synthetic_features
from helpers.presentation import Table

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
    xb, ids, xq, truth = data
    d2 = ((xq[:, None, :] - xb[None, :, :]) ** 2).sum(-1)
    expected = ids[np.argsort(d2, axis=1)[:, :K]]
    assert ev.recall_at_k(truth, expected, K) == 1.0
    cos = ev.ground_truth(xb, ids, xq, K, metric="cosine")
    assert cos.metric == "cosine" and not np.array_equal(cos.ids, truth.ids)


def test_flat_against_itself_has_recall_one(data):
    xb, ids, xq, truth = data
    found = ix.search(ix.build(ix.flat(D), xb, ids).index, xq, K)
    assert ev.recall_at_k(found, truth, K) == 1.0 and ev.one_recall_at_1(found, truth) == 1.0


def test_ivf_recall_never_falls_as_nprobe_grows(data):
    xb, ids, xq, truth = data
    index = ix.build(ix.ivf_flat(D, 64), xb, ids).index
    recalls = ev.sweep("ivf", index, xq, truth, "nprobe", [1, 2, 4, 8, 16, 32, 64], K, repeats=1).column(f"recall@{K}")
    assert all(a <= b for a, b in zip(recalls, recalls[1:])), recalls
    assert recalls[0] < 0.9 and recalls[-1] == 1.0    # visiting every list is exact search


def test_hnsw_recall_never_falls_as_ef_search_grows(data):
    xb, ids, xq, truth = data
    index = ix.build(ix.hnsw(D, 4, 8), xb, ids).index    # a deliberately weak graph, so recall has room to grow
    recalls = ev.sweep("hnsw", index, xq, truth, "efSearch", [10, 20, 40, 80, 160], K, repeats=1).column(f"recall@{K}")
    assert all(a <= b for a, b in zip(recalls, recalls[1:])), recalls
    assert recalls[0] < recalls[-1]


def test_memory_is_the_serialized_size(data):
    xb, ids, _, _ = data
    flat = ev.memory_bytes(ix.build(ix.flat(D), xb, ids).index)
    assert len(xb) * (D * 4 + 8) <= flat < len(xb) * (D * 4 + 8) + 10_000   # vectors + int64 ids + header
    pq = ev.memory_bytes(ix.build(ix.pq(D, 8, nbits=4), xb, ids).index)
    assert pq < flat / 4


def test_measure_row_and_qps(data):
    xb, ids, xq, truth = data
    built = ix.build(ix.ivf_flat(D, 64), xb, ids)
    row = ev.measure("ivf", built, xq, truth, K, repeats=1, single_queries=5, nprobe=8)
    assert row["index"] == "ivf" and row["setting"] == "nprobe=8" and 0 < row[f"recall@{K}"] <= 1
    assert row["QPS"] > 0 and row["QPS 1-by-1"] > 0 and row["memory MB"] > 0
    assert row["train s"] == built.train_s and row["add s"] == built.add_s
    assert ev.qps(built.index, xq[:3], K, repeats=2, one_at_a_time=True) > 0


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
