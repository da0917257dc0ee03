"""Faiss indexes with checked parameters, vectors stored under their manifest ids, search to paths.

The course's conventions, which every function here follows:
- Metric `"l2"`: squared Euclidean distances, smaller is nearer. Metric `"cosine"`: both sides
  L2-normalised, then inner product, larger is nearer. The course uses inner product only for
  cosine, so `build` and `search` normalise whenever an index's metric is inner product.
- Vectors keep their manifest ids: IVF indexes store ids themselves (`add_with_ids`); the others
  (Flat, PQ, HNSW, refine) are wrapped in `faiss.IndexIDMap`.
- Parameters are checked before Faiss sees them, and a bad one raises `IndexParamError` saying
  what to change: k-means wants at least 39 training points per centroid (IVF's nlist centroids,
  PQ's 2**nbits centroids per sub-quantiser); PQ's m must divide d; nlist is advised between
  4*sqrt(N) and 16*sqrt(N) (`NlistWarning` outside that range).

The constructors (`flat`, `ivf_flat`, `pq`, `ivf_pq`, `hnsw`, `refine_flat`, `with_pca`,
`with_opq`) call the Faiss constructors you would write by hand; `from_factory` takes an
`index_factory` string instead. `build` trains, adds and times; `search` returns ids, scores, paths.
"""

from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import faiss
import numpy as np

METRICS = {"l2": faiss.METRIC_L2, "cosine": faiss.METRIC_INNER_PRODUCT}
MIN_POINTS_PER_CENTROID = 39   # below this Faiss's k-means warns; we refuse (see `train`)


class IndexParamError(ValueError):
    """An index parameter (or training set) that cannot give a sound index; the message says what to change."""


class VectorError(ValueError):
    """Vectors that are not a 2-d numeric batch of the expected dimension."""


class NlistWarning(UserWarning):
    """nlist is outside the advised range for the number of vectors indexed."""


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


def _metric(metric: str) -> int:
    if metric not in METRICS:
        raise IndexParamError(f"metric {metric!r}: use one of {', '.join(METRICS)}")
    return METRICS[metric]


def metric_of(index: faiss.Index) -> str:
    """`"cosine"` for an inner-product index, `"l2"` for an L2 one."""
    return "cosine" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"


# ---------------------------------------------------------------- parameter advice and checks

def nlist_range(n: int) -> tuple[int, int]:
    """The advised nlist range for `n` indexed vectors: 4*sqrt(n) to 16*sqrt(n), at most n // 39.

    n // 39 is the most centroids that n training points support (39 each). Below about 24,000
    vectors that cap is under 4*sqrt(n); the range is then the 4x-wide band ending at the cap.
    """
    lo = math.ceil(4 * math.sqrt(n))
    hi = min(math.floor(16 * math.sqrt(n)), max(1, n // MIN_POINTS_PER_CENTROID))
    return (lo if lo <= hi else max(1, hi // 4)), hi


def suggest_nlist(n: int) -> int:
    """The low end of `nlist_range(n)`: the cheapest advised nlist to train (fewest centroids)."""
    return nlist_range(n)[0]


def _positive_int(name: str, value, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise IndexParamError(f"{name} must be a positive integer, got {value!r}{hint}")
    return int(value)


def _check_pq(d: int, m, nbits) -> tuple[int, int]:
    m = _positive_int("m (number of PQ sub-quantisers)", m)
    if d % m:
        divisors = [k for k in range(1, d + 1) if d % k == 0 and k <= 512]
        raise IndexParamError(f"m={m} does not divide d={d}: each sub-quantiser takes d/m dimensions, "
                              f"so pick m from {divisors}")
    nbits = _positive_int("nbits", nbits)
    if nbits > 16:
        raise IndexParamError(f"nbits={nbits}: each sub-quantiser has 2**nbits centroids; use 4..16 (8 is usual)")
    return m, nbits


# ---------------------------------------------------------------- constructors

def flat(d: int, metric: str = "l2") -> faiss.Index:
    """Exact search: IndexFlatL2 (or IndexFlatIP for cosine) in an IndexIDMap."""
    d = _positive_int("d", d)
    return faiss.IndexIDMap(faiss.IndexFlatL2(d) if _metric(metric) == faiss.METRIC_L2 else faiss.IndexFlatIP(d))


def ivf_flat(d: int, nlist: int, metric: str = "l2") -> faiss.IndexIVFFlat:
    """IndexIVFFlat: k-means into nlist lists of full vectors; search visits `nprobe` lists."""
    d, nlist = _positive_int("d", d), _positive_int("nlist", nlist)
    return faiss.IndexIVFFlat(faiss.IndexFlat(d, _metric(metric)), d, nlist, _metric(metric))


def pq(d: int, m: int, nbits: int = 8, metric: str = "l2") -> faiss.Index:
    """IndexPQ in an IndexIDMap: every vector stored as m codes of nbits bits (m*nbits/8 bytes)."""
    d = _positive_int("d", d)
    m, nbits = _check_pq(d, m, nbits)
    return faiss.IndexIDMap(faiss.IndexPQ(d, m, nbits, _metric(metric)))


def ivf_pq(d: int, nlist: int, m: int, nbits: int = 8, metric: str = "l2") -> faiss.IndexIVFPQ:
    """IndexIVFPQ: IVF lists holding PQ codes of each vector's residual from its centroid."""
    d, nlist = _positive_int("d", d), _positive_int("nlist", nlist)
    m, nbits = _check_pq(d, m, nbits)
    return faiss.IndexIVFPQ(faiss.IndexFlat(d, _metric(metric)), d, nlist, m, nbits, _metric(metric))


def hnsw(d: int, M: int = 32, ef_construction: int = 200, ef_search: int = 64,
         metric: str = "l2", id_map: bool = True) -> faiss.Index:
    """IndexHNSWFlat in an IndexIDMap: a layered graph with M links a node (2*M on the bottom layer).

    efConstruction is the candidate list while building (Faiss's default 40 can give a poor graph
    on large sets of high-dimensional features; 200 is sound), efSearch the candidate list while
    searching. `id_map=False` leaves out the IndexIDMap, to nest the graph in `refine_flat`.
    """
    d = _positive_int("d", d)
    M = _positive_int("M", M)
    if not 2 <= M <= 256:
        raise IndexParamError(f"M={M}: use 2..256 links a node (16 to 64 is usual)")
    ef_construction = _positive_int("ef_construction", ef_construction)
    if ef_construction < M:
        raise IndexParamError(f"ef_construction={ef_construction} is below M={M}: the graph cannot find "
                              f"M good links; use at least M (about 200 is sound)")
    index = faiss.IndexHNSWFlat(d, M, _metric(metric))
    index.hnsw.efConstruction = ef_construction
    index.hnsw.efSearch = _positive_int("ef_search", ef_search)
    return faiss.IndexIDMap(index) if id_map else index


def refine_flat(base: faiss.Index, k_factor: float = 4.0) -> faiss.Index:
    """IndexRefineFlat in an IndexIDMap: `base` proposes k*k_factor candidates, exact distances re-rank them.

    The refine stage keeps every full vector, so its memory is Flat's plus the base's.
    """
    if base.ntotal or any(isinstance(layer, faiss.IndexIDMap) for layer in layers(base)):
        raise IndexParamError("give refine_flat an empty base index without IndexIDMap: the refine stage "
                              "finds vectors by the base's positions, and refine_flat adds the id map around both")
    if not k_factor >= 1:
        raise IndexParamError(f"k_factor={k_factor}: re-ranking needs at least k candidates, use k_factor >= 1")
    index = faiss.IndexRefineFlat(base)
    index.k_factor = float(k_factor)
    return faiss.IndexIDMap(index)


def with_pca(d: int, inner: faiss.Index) -> faiss.IndexPreTransform:
    """PCA from d dimensions down to `inner.d`, then `inner`: an IndexPreTransform."""
    _check_reduction(d, inner)
    return faiss.IndexPreTransform(faiss.PCAMatrix(d, inner.d), inner)


def with_opq(d: int, inner: faiss.Index, m: int) -> faiss.IndexPreTransform:
    """An OPQ rotation (learned for m sub-quantisers) from d down to `inner.d`, then `inner`.

    OPQ's training runs an SVD of a d x inner.d matrix every iteration: on 2048-d vectors to 2048
    that takes minutes, so reduce (inner.d a few hundred) or apply PCA first.
    """
    _check_reduction(d, inner)
    m, _ = _check_pq(inner.d, m, 8)
    return faiss.IndexPreTransform(faiss.OPQMatrix(d, m, inner.d), inner)


def _check_reduction(d: int, inner: faiss.Index) -> None:
    d = _positive_int("d", d)
    if not 1 <= inner.d <= d:
        raise IndexParamError(f"the inner index has d={inner.d}; a reduction from {d} dims needs 1..{d}")


def from_factory(d: int, description: str, metric: str = "l2") -> faiss.Index:
    """`faiss.index_factory(d, description, metric)`, checked, in an IndexIDMap when it needs one.

    Examples: "Flat", "IVF1024,Flat", "IVF1024,PQ64", "PCA256,IVF1024,PQ32", "OPQ32_256,IVF1024,PQ32",
    "HNSW32", "IVF1024,PQ64,RFlat" (refine with exact distances).
    """
    d = _positive_int("d", d)
    try:
        index = faiss.index_factory(d, description, _metric(metric))
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1].split("failed: ")[-1]   # Faiss's message, without its C++ location
        raise IndexParamError(f"index_factory({d}, {description!r}): {reason.rstrip('.')}. Check the string against "
                              "the examples in from_factory's docstring") from None
    return index if _stores_ids(index) else faiss.IndexIDMap(index)


# ---------------------------------------------------------------- looking inside an index

def layers(index: faiss.Index) -> Iterator[faiss.Index]:
    """The index and each index it wraps (IDMap, pre-transform, refine base), outermost first, downcast."""
    index = faiss.downcast_index(index)
    yield index
    for attr in ("index", "base_index"):   # IndexIDMap, IndexPreTransform / IndexRefine
        inner = getattr(index, attr, None)
        if isinstance(inner, faiss.Index):
            yield from layers(inner)


def _transforms(index: faiss.Index) -> list:
    return [faiss.downcast_VectorTransform(layer.chain.at(i))
            for layer in layers(index) if isinstance(layer, faiss.IndexPreTransform)
            for i in range(layer.chain.size())]


def _stores_ids(index: faiss.Index) -> bool:
    """Whether `add_with_ids` works: an IndexIDMap or IVF index, possibly behind a pre-transform."""
    for layer in layers(index):
        if isinstance(layer, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexIVF)):
            return True
        if not isinstance(layer, faiss.IndexPreTransform):
            return False
    return False


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


def set_params(index: faiss.Index, **params) -> faiss.Index:
    """Set search-time parameters wherever they live inside wrappers; returns `index`.

    Names: `nprobe` (IVF lists visited), `efSearch` (HNSW candidate list), `k_factor` (refine:
    candidates re-ranked per result). Example: `set_params(index, nprobe=16)`.
    """
    setters = {
        "nprobe": (faiss.IndexIVF, lambda layer, v: setattr(layer, "nprobe", _positive_int("nprobe", v))),
        "efSearch": (faiss.IndexHNSW, lambda layer, v: setattr(layer.hnsw, "efSearch", _positive_int("efSearch", v))),
        "k_factor": (faiss.IndexRefine, lambda layer, v: setattr(layer, "k_factor", float(v))),
    }
    for name, value in params.items():
        kind, setter = setters.get(name, (None, None))
        targets = [layer for layer in layers(index) if kind and isinstance(layer, kind)]
        if not targets:
            usable = [n for n, (k, _) in setters.items() if any(isinstance(x, k) for x in layers(index))]
            raise IndexParamError(f"{describe(index)} has no parameter {name!r}; it takes {usable or 'none'}")
        for layer in targets:
            setter(layer, value)
    return index


@contextmanager
def blas_threshold(value: int = 0) -> Iterator[None]:
    """Set `faiss.cvar.distance_compute_blas_threshold` inside a `with` block, restored after.

    Exact (Flat) search computes a whole batch's distances as one BLAS matrix product only when
    the batch is big enough: in faiss-cpu 1.15 when queries x d reaches this threshold (128,000;
    notebook 03 measures the switch). Below it, each query streams the whole database from memory
    by itself, which on a large database can be ten times slower. 0 forces the BLAS path. Its
    distances are exact up to float rounding (||x||^2 + ||y||^2 - 2<x,y>), so ties may swap.
    """
    before = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = int(value)
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = before


# ---------------------------------------------------------------- training, adding, searching

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


def train(index: faiss.Index, x, min_per_centroid: int = MIN_POINTS_PER_CENTROID) -> float:
    """Check the training set's size, then `index.train(x)`; returns the seconds it took.

    Fewer points than centroids is refused (k-means cannot run). Fewer than `min_per_centroid`
    (39) per centroid is refused too, because the centroids come out poor; pass a lower
    `min_per_centroid` to try it anyway (Faiss then prints its own warning).
    """
    x = as_float32_matrix(x, index.d, "training vectors")
    if index.is_trained:
        return 0.0
    hard, need = min_training_points(index, 1), min_training_points(index, min_per_centroid)
    n = len(x)
    if n < hard:
        raise IndexParamError(f"{describe(index)} has {hard} centroids (or dimensions) to learn but only "
                              f"{n} training vectors: k-means cannot run; train on more vectors or use fewer centroids")
    if n < need:
        hints = ["train on more vectors"]
        for layer in layers(index):
            if isinstance(layer, faiss.IndexIVF) and n < min_per_centroid * layer.nlist:
                hints.append(f"use nlist <= {n // min_per_centroid}")
            if isinstance(layer, (faiss.IndexPQ, faiss.IndexIVFPQ)) and n < min_per_centroid * layer.pq.ksub:
                hints.append(f"use nbits <= {int(math.log2(max(n // min_per_centroid, 1)))}")
        if any(isinstance(t, faiss.OPQMatrix) for t in _transforms(index)):
            hints.append("use PCA instead of OPQ (OPQ learns its rotation with 256 centroids per sub-quantiser)")
        raise IndexParamError(f"{describe(index)} needs at least {need} training vectors "
                              f"({min_per_centroid} per k-means centroid), got {n}: {' or '.join(hints)}")
    if metric_of(index) == "cosine":
        x = normalize(x)
    start = time.perf_counter()
    index.train(x)
    return time.perf_counter() - start


@dataclass
class Built:
    """An index after `build`, with how long training and adding took (seconds)."""
    index: faiss.Index
    train_s: float
    add_s: float

    @property
    def build_s(self) -> float:
        return self.train_s + self.add_s


def build(index: faiss.Index, xb, ids, train_x=None, *,
          min_per_centroid: int = MIN_POINTS_PER_CENTROID) -> Built:
    """Train `index` on `train_x` (default: `xb`), add `xb` under `ids`, and time both.

    An index that cannot store ids is wrapped in IndexIDMap first, so use the returned `.index`.
    Vectors are L2-normalised for an inner-product (cosine) index. Warns (NlistWarning) when an
    IVF index's nlist is outside `nlist_range` for the number of vectors it then holds.
    """
    if not _stores_ids(index):
        index = faiss.IndexIDMap(index)
    xb = as_float32_matrix(xb, index.d, "database vectors")
    ids = as_ids(ids, len(xb))
    train_s = train(index, xb if train_x is None else train_x, min_per_centroid)
    if metric_of(index) == "cosine":
        xb = normalize(xb)
    start = time.perf_counter()
    index.add_with_ids(xb, ids)
    add_s = time.perf_counter() - start
    lo, hi = nlist_range(index.ntotal)
    for layer in layers(index):
        if isinstance(layer, faiss.IndexIVF) and not lo <= layer.nlist <= hi:
            warnings.warn(f"nlist={layer.nlist} for {index.ntotal} vectors: the advised range is {lo}..{hi} "
                          f"(4*sqrt(N) to 16*sqrt(N), at most N/39); suggest_nlist gives {suggest_nlist(index.ntotal)}",
                          NlistWarning, stacklevel=2)
    return Built(index, train_s, add_s)


@dataclass
class SearchResult:
    """What a search found, one row per query, best first.

    ids: (nq, k) int64 manifest ids, -1 where fewer than k results were found.
    scores: (nq, k) float32, squared L2 distances (metric "l2", smaller is nearer) or cosine
    similarities (metric "cosine", larger is nearer).
    paths: (nq lists of k) relative image paths, None for -1 and for ids the manifest lacks
    (distractors); None when no manifest was given.
    """
    ids: np.ndarray
    scores: np.ndarray
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
    queries = as_float32_matrix(queries, index.d, "queries")
    metric = metric_of(index)
    if metric == "cosine":
        queries = normalize(queries)
    scores, ids = index.search(queries, k)
    paths = None
    if manifest is not None:
        known = set(manifest.ids.tolist())
        paths = [manifest.paths_of([i if i in known else -1 for i in row.tolist()]) for row in ids]
    return SearchResult(ids, scores, metric, paths)
