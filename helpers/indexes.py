"""What the notebooks need around Faiss, but not Faiss itself: vector checks, advice, looking inside.

The notebooks build every index in plain sight with Faiss's own classes or `faiss.index_factory`
strings and set search parameters with `faiss.ParameterSpace().set_index_parameters(index,
"nprobe=16")` (it reaches through IndexIDMap, IndexPreTransform and IndexRefine; the refine
stage's parameter is `k_factor_rf`). This module only helps around them:
- `as_float32_matrix`, `as_ids`, `normalize`: the input Faiss accepts, checked, with errors that
  say what to change (`VectorError`, `IndexParamError`). `normalize` is the course's one
  normaliser (cosine similarity = L2-normalise both sides, then inner product; notebook 03_flat_index).
- `nlist_range`, `suggest_nlist`, `min_training_points`, `training_sample`: Faiss's sizing advice and
  the course's one nlist rule (notebooks 04_ivf to 11_scaling_out), and a random training sample.
- `layers`, `describe`, `metric_of`: what an index is made of (notebooks 05_product_quantization to 06_hnsw, 09_serialization).
- `blas_threshold`: Faiss's switch between its two ways of computing distances, for exact search
  (notebook 03_flat_index) and for PQ's and OPQ's k-means training (notebook 05_product_quantization).
- `search`: a batch search that returns scores, ids (Faiss's order) and the images' paths (notebook 10_search_explorer, the CLI).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import faiss
import numpy as np

MIN_POINTS_PER_CENTROID = 39   # below this many training points per centroid Faiss's k-means warns
#: The metrics the course names, and the Faiss metric each searches with. cosine: L2-normalise both
#: sides, then inner product (notebook 03_flat_index); ip: inner product as given; l2: squared L2.
METRICS = {"cosine": faiss.METRIC_INNER_PRODUCT, "ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
#: The metrics an index is built and judged with (ground truth, bundles, the CLI's --metric).
INDEX_METRICS = ("cosine", "l2")


class IndexParamError(ValueError):
    """An index parameter (or training set) that cannot give a sound index; the message says what to change."""


class VectorError(ValueError):
    """Vectors that are not a 2-d numeric batch of the expected dimension."""


# ---------------------------------------------------------------- vectors

def as_float32_matrix(x, d: int | None = None, name: str = "vectors") -> np.ndarray:
    """`x` as a float32, C-contiguous (n, d) array, the only input Faiss accepts.

    Raises VectorError for a non-numeric dtype, an array that is not 2-d (one vector `v` is
    `v[None, :]`), a dimension other than `d`, or NaN/inf values.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise VectorError(f"{name} must be numbers (float or int), got dtype {x.dtype}; "
                          "convert them with np.asarray(..., dtype=np.float32)")
    if x.ndim != 2:
        hint = " (one vector v is the batch v[None, :])" if x.ndim == 1 else ""
        raise VectorError(f"{name} must be a 2-d array (n, d), got shape {x.shape}{hint}")
    if d is not None and x.shape[1] != d:
        raise VectorError(f"{name} have {x.shape[1]} dimensions but the index has {d}: use "
                          "vectors from the same backbone and preprocessing as the index")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise VectorError(f"{name} contain NaN or infinite values; fix or drop those rows first")
    return x


def normalize(x) -> np.ndarray:
    """A copy of `x` with every row scaled to unit L2 norm (all-zero rows stay zero)."""
    x = as_float32_matrix(x).copy()
    faiss.normalize_L2(x)
    return x


def as_ids(ids, n: int) -> np.ndarray:
    """`ids` as n unique, non-negative int64 values (manifest ids)."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu" or ids.shape != (n,):
        raise IndexParamError(f"ids must be {n} integers, one per vector; got dtype {ids.dtype}, shape {ids.shape}")
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if n and (ids.min() < 0 or len(np.unique(ids)) != n):
        raise IndexParamError("ids must be unique and non-negative (use the manifest's ids)")
    return ids


def faiss_metric(metric: str, allowed=tuple(METRICS)) -> int:
    """The Faiss metric for one of the course's metric names (ValueError naming the allowed ones)."""
    if metric not in allowed:
        raise ValueError(f"metric {metric!r}: use one of {', '.join(allowed)}")
    return METRICS[metric]


def prepare(x, metric: str, d: int | None = None, name: str = "vectors") -> np.ndarray:
    """Vectors as an index of `metric` takes them: checked float32, L2-normalised for cosine."""
    return normalize(as_float32_matrix(x, d, name)) if metric == "cosine" else as_float32_matrix(x, d, name)


def metric_of(index: faiss.Index) -> str:
    """`"cosine"` for an inner-product index, `"l2"` for an L2 one."""
    return "cosine" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"


# ---------------------------------------------------------------- parameter advice and checks

def nlist_range(n: int) -> tuple[int, int]:
    """Faiss's guidelines' nlist band for `n` indexed vectors below a million: 4*sqrt(n) to 16*sqrt(n)."""
    return math.ceil(4 * math.sqrt(n)), max(1, math.floor(16 * math.sqrt(n)))


def suggest_nlist(n: int) -> int:
    """The course's one nlist rule (notebooks 04_ivf to 11_scaling_out, the recommender, bundles). Faiss's guidelines
    (github.com/facebookresearch/faiss/wiki/Guidelines-to-choose-an-index) advise 4*sqrt(n) to
    16*sqrt(n) cells below a million vectors and 65,536 / 262,144 / 1,048,576 cells up to 10M / 100M
    / beyond; we take the low end, the cheapest to train, and at most n // 39, so that k-means gets the
    39 training points a centroid below which Faiss warns."""
    if n >= 1_000_000:
        nlist = 1_048_576 if n >= 100_000_000 else 262_144 if n >= 10_000_000 else 65_536
    else:
        nlist = nlist_range(n)[0]
    return max(1, min(nlist, n // MIN_POINTS_PER_CENTROID))


def training_sample(x, n: int, seed: int = 0) -> np.ndarray:
    """`n` rows of `x` drawn at random without replacement (all of `x` when n >= len(x)), in their
    original order: k-means and PQ train on a sample of the whole collection, never on its first rows
    (the course database puts every real image before the haystack)."""
    x = np.asarray(x)
    if n >= len(x):
        return x
    pick = np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))
    return np.ascontiguousarray(x[pick])


def _positive_int(name: str, value, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise IndexParamError(f"{name} must be a positive integer, got {value!r}{hint}")
    return int(value)


# ---------------------------------------------------------------- looking inside an index

def layers(index: faiss.Index) -> Iterator[faiss.Index]:
    """The index and each index it wraps (IDMap, pre-transform, refine base), outermost first, downcast."""
    index = faiss.downcast_index(index)
    yield index
    for attr in ("index", "base_index"):   # IndexIDMap, IndexPreTransform / IndexRefine
        inner = getattr(index, attr, None)
        if isinstance(inner, faiss.Index):
            yield from layers(inner)


def innermost(index: faiss.Index, through=(faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)) -> faiss.Index:
    """The first layer of `index` that is not one of the wrappers `through` (downcast)."""
    return next(layer for layer in layers(index) if not isinstance(layer, through))


def search_knob(index: faiss.Index) -> tuple[str, int, int | None] | None:
    """The search-time parameter of `index` as `faiss.ParameterSpace` names it, its current value and
    its largest useful value: ("nprobe", nprobe, nlist) for IVF, ("efSearch", efSearch, None) for
    HNSW; None for indexes that always scan everything (Flat, PQ). Notebooks 08_tuning, 10_search_explorer."""
    for layer in layers(index):
        if isinstance(layer, faiss.IndexIVF):
            return "nprobe", int(layer.nprobe), int(layer.nlist)
        if isinstance(layer, faiss.IndexHNSW):
            return "efSearch", int(layer.hnsw.efSearch), None
    return None


def _transforms(index: faiss.Index) -> list:
    return [faiss.downcast_VectorTransform(layer.chain.at(i))
            for layer in layers(index) if isinstance(layer, faiss.IndexPreTransform)
            for i in range(layer.chain.size())]


def describe(index: faiss.Index) -> str:
    """A one-line summary, e.g. `IndexIDMap > IndexHNSWFlat(M=32, efConstruction=200, efSearch=64)`."""
    parts = []
    for layer in layers(index):
        p = {}
        if isinstance(layer, faiss.IndexIVF):
            p.update(nlist=layer.nlist, nprobe=layer.nprobe)
        if isinstance(layer, (faiss.IndexPQ, faiss.IndexIVFPQ)):
            p.update(m=layer.pq.M, nbits=layer.pq.nbits)
        if isinstance(layer, faiss.IndexHNSW):
            p.update(M=layer.hnsw.nb_neighbors(1), efConstruction=layer.hnsw.efConstruction,
                     efSearch=layer.hnsw.efSearch)
        if isinstance(layer, faiss.IndexRefine):
            p.update(k_factor=layer.k_factor)
        if isinstance(layer, faiss.IndexPreTransform):
            p.update(transforms="+".join(f"{type(t).__name__}({t.d_in}->{t.d_out})" for t in _transforms(layer)))
        parts.append(type(layer).__name__ + (f"({', '.join(f'{k}={v}' for k, v in p.items())})" if p else ""))
    return " > ".join(parts)


@contextmanager
def blas_threshold(value: int = 0) -> Iterator[None]:
    """Set `faiss.cvar.distance_compute_blas_threshold` inside a `with` block, restored after.

    Faiss computes the distances between a batch of vectors and a database as one BLAS matrix
    product only when vectors x d reaches this threshold (128,000 in faiss-cpu 1.15); below it, one
    pair at a time (exact search with fewer queries than threads on a large database splits the
    database between the threads and uses BLAS whatever the threshold: `should_use_db_parallel` in
    faiss/utils/distances.cpp). Exact search below it streams the whole database once per query
    (notebook 03_flat_index measures it). k-means takes the same switch: PQ and OPQ train one on
    each sub-vector, and short sub-vectors with few points stay under it (notebook
    05_product_quantization and `benchmarks/bench_pq_training.py` measure what forcing BLAS buys).
    0 forces the BLAS path. Its distances are exact up to float rounding (||x||^2 + ||y||^2 -
    2<x,y>), so ties may swap.
    """
    before = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = int(value)
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = before


# ---------------------------------------------------------------- training, adding, searching

def with_ids(index: faiss.Index) -> faiss.Index:
    """`index` in a `faiss.IndexIDMap` unless it stores ids itself (an id map, or IVF, possibly
    behind pre-transforms), so that `add_with_ids` works on it."""
    kinds = (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexIVF)
    return index if isinstance(innermost(index, through=faiss.IndexPreTransform), kinds) else faiss.IndexIDMap(index)


def build(factory: str, xb, ids=None, metric: str = "cosine", *, train=None, n_train: int | None = None,
          seed: int = 0, ef_construction: int | None = None, chunk: int | None = None, progress: bool = False,
          times: dict | None = None) -> faiss.Index:
    """An index built as the notebooks build it (the one place outside a notebook's own cells):
    `faiss.index_factory(d, factory, metric)` (in an `IndexIDMap` when `ids` are given and it keeps
    none: `with_ids`); HNSW's `ef_construction` set before adding; trained, when it needs it, on
    `train` (default `xb`) or a random `n_train` of those rows (`seed`), with Faiss's BLAS threshold at 0
    (PQ's small k-means on BLAS: notebook 05_product_quantization); then filled, in chunks of
    `chunk` rows with a progress bar when asked. cosine: vectors L2-normalised, inner product; l2:
    as given. `times`, a dict, receives "train s" and "add s"."""
    from time import perf_counter

    from tqdm.auto import tqdm

    kind = faiss_metric(metric, INDEX_METRICS)
    xb = prepare(xb, metric)
    index = faiss.index_factory(xb.shape[1], factory, kind)
    if ids is not None:
        index, ids = with_ids(index), as_ids(ids, len(xb))
    if ef_construction is not None:
        next(layer for layer in layers(index) if isinstance(layer, faiss.IndexHNSW)).hnsw.efConstruction = ef_construction
    start = perf_counter()
    if not index.is_trained:
        sample = xb if train is None else prepare(train, metric, xb.shape[1], "training vectors")
        with blas_threshold(0):
            index.train(training_sample(sample, n_train, seed) if n_train else sample)
    added = perf_counter()
    step = chunk or len(xb)
    for first in tqdm(range(0, len(xb), step), desc=f"adding to {factory}", unit="chunk", disable=not progress):
        if ids is None:
            index.add(xb[first:first + step])
        else:
            index.add_with_ids(xb[first:first + step], ids[first:first + step])
    if times is not None:
        times.update({"train s": added - start, "add s": perf_counter() - added})
    return index


def min_training_points(index: faiss.Index, per_centroid: int = MIN_POINTS_PER_CENTROID) -> int:
    """How many training vectors `index` needs: per_centroid for each k-means centroid (IVF's nlist,
    PQ's and OPQ's 2**nbits per sub-quantiser), and at least the output dimension for PCA."""
    need = [1]
    for layer in layers(index):
        if isinstance(layer, faiss.IndexIVF):
            need.append(per_centroid * layer.nlist)
        if isinstance(layer, (faiss.IndexPQ, faiss.IndexIVFPQ)):
            need.append(per_centroid * layer.pq.ksub)
    for t in _transforms(index):
        need.append(per_centroid * 256 if isinstance(t, faiss.OPQMatrix) else t.d_out)
    return max(need)


@dataclass
class SearchResult:
    """What a search found, one row per query, best first, in Faiss's order (scores, ids).

    scores: (nq, k) float32, squared L2 distances (metric "l2", smaller is nearer) or cosine
    similarities (metric "cosine", larger is nearer).
    ids: (nq, k) int64 manifest ids, -1 where fewer than k results were found.
    paths: (nq lists of k) relative image paths, None for -1 and for ids the manifest lacks
    (distractors); None when no manifest was given.
    """
    scores: np.ndarray
    ids: np.ndarray
    metric: str
    paths: list[list[str | None]] | None = None


def search(index: faiss.Index, queries, k: int, manifest=None) -> SearchResult:
    """Search a batch of queries; with a `manifest`, also the paths of the ids found.

    Queries are converted to float32 C-contiguous (VectorError on a wrong dimension or dtype)
    and L2-normalised for a cosine index.
    """
    k = _positive_int("k", k)
    if index.ntotal == 0:
        raise IndexParamError("the index is empty: add vectors (build) before searching")
    metric = metric_of(index)
    scores, ids = index.search(prepare(queries, metric, index.d, "queries"), k)
    paths = None
    if manifest is not None:
        known = set(manifest.ids.tolist())
        paths = [manifest.paths_of([i if i in known else -1 for i in row.tolist()]) for row in ids]
    return SearchResult(scores, ids, metric, paths)
