"""Measuring an index against exact search: recall, precision, speed, memory, parameter sweeps.

Definitions used throughout (the notebooks repeat them):
- ground truth: the k nearest database vectors of each query by exact (Flat) search.
- recall@k: the share of the true top-k neighbours found in the returned top-k, averaged over
  queries. 1.0 means the index returned exactly the true top-k (in any order).
- 1-recall@1 (Faiss's "1-recall@1"): the share of queries whose true nearest neighbour is
  ranked first.
- precision@k by label: the share of the returned top-k neighbours that carry the query's
  label, the query itself excluded when it is in the database. It measures the features, not
  the index: exact search has a precision too.
- QPS: queries per second, the median over repeats, for one batch of all queries and for
  queries sent one at a time (how an interactive app calls it).
- memory: the size of the serialized index (faiss.serialize_index), ids included.
Ties (duplicate images at equal distance) can make exact search's order arbitrary among them,
so an approximate index may find a tied neighbour that ground truth listed later.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Iterable, Mapping

import faiss
import numpy as np

from .indexes import INDEX_METRICS, SearchResult, as_float32_matrix, as_ids, faiss_metric, metric_of, prepare, search
from .presentation import Table


def ground_truth(xb, ids, queries, k: int, metric: str = "cosine") -> SearchResult:
    """The exact top-k of each query among `xb` (stored under `ids`), by a Flat index:
    inner product on L2-normalised vectors for "cosine" (the course's metric), squared L2 for "l2".
    Taught in notebook 03_flat_index; `CourseDatabase.ground_truth` keeps it for notebooks 04_ivf to 11_scaling_out."""
    kind = faiss_metric(metric, INDEX_METRICS)
    xb = prepare(xb, metric, name="database vectors")
    index = faiss.IndexIDMap(faiss.IndexFlat(xb.shape[1], kind))
    index.add_with_ids(xb, as_ids(ids, len(xb)))
    return search(index, queries, k)


class Timer:
    """`with Timer() as t: index.train(x)`, then `t.seconds`: the block's wall-clock seconds
    (notebooks 04_ivf to 06_hnsw time training and adding this way)."""

    seconds: float = float("nan")

    def __enter__(self) -> "Timer":
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start


def _ids(result) -> np.ndarray:
    ids = result.ids if isinstance(result, SearchResult) else np.asarray(result)
    if ids.ndim != 2:
        raise ValueError(f"expected (queries, k) ids or a SearchResult, got shape {ids.shape}")
    return ids


def recall_at_k(found, truth, k: int) -> float:
    """recall@k: the share of the true top-k found in the returned top-k, averaged over queries
    (computed by hand in notebook 03_flat_index, then used by every index notebook).

    `found` and `truth` are SearchResults or (nq, >=k) id arrays; -1 (no result) never matches.
    """
    return float(recalls_at_k(found, truth, k).mean())


def recalls_at_k(found, truth, k: int) -> np.ndarray:
    """Each query's recall@k (its mean is `recall_at_k`): how much it varies from query to query
    says how far a recall measured on few queries can be trusted (`tuning.tune`'s margin)."""
    found, truth = _ids(found)[:, :k], _ids(truth)[:, :k]
    if found.shape[1] < k or truth.shape[1] < k or len(found) != len(truth) or not len(found):
        raise ValueError(f"recall@{k} needs k={k} results for each of the same queries; got "
                         f"{found.shape} found and {truth.shape} true")
    return np.array([len(np.intersect1d(f[f >= 0], t[t >= 0])) for f, t in zip(found, truth)]) / k


def one_recall_at_1(found, truth) -> float:
    """1-recall@1: the share of queries whose true nearest neighbour is ranked first (notebooks 04_ivf to 06_hnsw)."""
    found, truth = _ids(found), _ids(truth)
    return float(np.mean(found[:, 0] == truth[:, 0]))


def precision_at_k(found, query_labels: Iterable[str], labels: Mapping[int, str], k: int,
                   query_ids: Iterable[int] | None = None) -> float:
    """precision@k by label: the share of the top-k neighbours whose label is the query's (notebooks 02_features, 03_flat_index).

    labels maps database id -> label (ids missing from it, such as distractors, never match).
    With `query_ids` (queries that are in the database), each query's own id is dropped from its
    results first, so search k + 1 neighbours. Missing results (-1) count as wrong.
    """
    found = _ids(found)
    query_labels = list(query_labels)
    own = list(query_ids) if query_ids is not None else [None] * len(found)
    if not len(query_labels) == len(own) == len(found):
        raise ValueError("one label (and id) a query, the same number as result rows")
    hits = 0
    for row, label, qid in zip(found, query_labels, own):
        kept = [i for i in row if i != qid][:k]
        if len(kept) < k:
            raise ValueError(f"fewer than k={k} results after dropping the query itself: search k + 1")
        hits += sum(labels.get(int(i)) == label for i in kept)
    return hits / (len(found) * k)


def median_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    """The median wall-clock seconds of `repeats` calls of `fn` (used by `qps`, notebooks 03_flat_index to 11_scaling_out)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def qps(index: faiss.Index, queries, k: int, repeats: int = 3, one_at_a_time: bool = False) -> float:
    """Queries per second: the median over `repeats` of searching all queries as one batch,
    or one query per call with `one_at_a_time` (pass fewer queries: each is a separate call).
    Notebook 03_flat_index teaches why a batch is faster."""
    queries = prepare(queries, metric_of(index), index.d, "queries")
    if one_at_a_time:
        rows = [q[None, :] for q in queries]
        seconds = median_seconds(lambda: [index.search(q, k) for q in rows], repeats)
    else:
        seconds = median_seconds(lambda: index.search(queries, k), repeats)
    return len(queries) / seconds


def memory_bytes(index: faiss.Index) -> int:
    """The serialized size of the index in bytes: its vectors or codes, ids, and trained parts
    (notebooks 03_flat_index to 06_hnsw compare it with the formula for each index type)."""
    return int(faiss.serialize_index(index).nbytes)


def measure(name: str, index: faiss.Index, queries, truth, k: int = 10, *, params: str = "",
            repeats: int = 3, single_queries: int = 50, train_s: float | None = None,
            add_s: float | None = None) -> dict:
    """One table row for an index: recall@k, 1-recall@1, QPS (batch and one at a time), memory,
    and the train/add seconds given. `params` ("nprobe=16", "efSearch=32,k_factor_rf=4") are set
    first with `faiss.ParameterSpace().set_index_parameters`. One row of the comparison table
    that notebooks 03_flat_index to 06_hnsw build."""
    queries = as_float32_matrix(queries, index.d, "queries")
    if params:
        faiss.ParameterSpace().set_index_parameters(index, params)
    result = search(index, queries, k)
    row = {"index": name, "setting": params,
           f"recall@{k}": recall_at_k(result, truth, k),
           "1-recall@1": one_recall_at_1(result, truth), "QPS": qps(index, queries, k, repeats)}
    if single_queries:
        row["QPS 1-by-1"] = qps(index, queries[:single_queries], k, repeats, one_at_a_time=True)
    row["memory MB"] = memory_bytes(index) / 1e6
    if train_s is not None:
        row["train s"] = train_s
    if add_s is not None:
        row["add s"] = add_s
    return row


def sweep(name: str, index: faiss.Index, queries, truth, param: str, values: Iterable, k: int = 10, *,
          repeats: int = 3) -> Table:
    """recall@k and batch QPS for each value of one search parameter (nprobe, efSearch,
    k_factor_rf), each set with `faiss.ParameterSpace().set_index_parameters` (notebooks 04_ivf to 06_hnsw, 08_tuning)."""
    rows = []
    for value in values:
        faiss.ParameterSpace().set_index_parameters(index, f"{param}={value}")
        result = search(index, queries, k)
        rows.append({"index": name, param: value, f"recall@{k}": recall_at_k(result, truth, k),
                     "1-recall@1": one_recall_at_1(result, truth), "QPS": qps(index, queries, k, repeats)})
    return Table(rows, f"{name}: recall@{k} and QPS against {param}")
