"""Choosing and tuning an index by measurement (notebook 08_tuning teaches it).

- `recommend(n, d, memory_budget, recall_target, metric)`: an `index_factory` string chosen by
  Faiss's "Guidelines to choose an index" (github.com/facebookresearch/faiss/wiki/Guidelines-to-choose-an-index)
  for n vectors of d dimensions within a memory budget, with its training-set size, the search
  parameter to tune and its range, its estimated memory and a one-line reason.
- `estimate_memory(factory, n, d)`: the serialized size of that index holding n vectors, from
  the formulas below (tests check them against `faiss.serialize_index` of built indexes).
- `tune(index, queries, truth, recall_target)`: the cheapest search setting that reaches the
  target recall@k on tuning queries by a margin of one standard error of that mean, set with
  `faiss.ParameterSpace`, or a result saying it cannot;
  `tune_on_own_vectors` when the collection's own vectors are the only queries (the CLI's --recall).
- `measure_settings(index, settings, queries, truth)`: recall and QPS at each setting (the grids).
- `pareto_front(rows)`: the rows no other row beats on both recall and speed.

Bytes a vector (serialized, ids included; d = dimension after any PCA/OPQ reduction):
  Flat 4d + 8 (IDMap ids) · IVF..,Flat 4d + 8 · IVF..,SQ<b> d*b/8 + 8 · IVF..,SQfp16 2d + 8 ·
  IVF..,PQm m + 8 · HNSW<M> 4d + 4(2M + M/(M-1)) + 12 + 8: the bottom layer keeps 2M links of
  4 bytes, upper layers M links each for the 1/(M-1) of a layer a vector has on average, a level
  (4 bytes) and an offset (8 bytes). The wiki's rounder "d*4 + M*2*4" leaves out the last three
  terms. · RFlat adds the full vectors, 4 x the input d.
Fixed parts: IVF's centroids (nlist x 4d, and an HNSW graph over them for IVF.._HNSW), PQ's
codebooks (2**nbits x 4d), SQ's ranges (2 x 4d), PCA's matrices (4 x (d_in^2 + d_out x d_in)),
OPQ's rotation (4 x d_out x d_in).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import faiss
import numpy as np

from .evaluate import ground_truth, median_seconds, recall_at_k, recalls_at_k
from .indexes import METRICS, MIN_POINTS_PER_CENTROID, search_knob, suggest_nlist

SMALL_N = 10_000                  # below this exact search is cheap enough (and PQ8 cannot train: 256 x 39 = 9,984)
HNSW_MAX_N = 10_000_000           # HNSW above this takes hours to build on a CPU; IVF.._HNSW instead
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
EF_SEARCH = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
K_FACTOR = 4                      # candidates re-ranked a result by RFlat (notebook 06_hnsw measured it)
OPQ_CODES = (128, 96, 64, 48, 32, 24, 16, 8, 4)   # PQ bytes a vector under SQ4; OPQ training grows with m
OWN_QUERIES = 500                 # tuning queries `tune_on_own_vectors` samples from the collection
MARGIN_SE = 1.0                   # `tune` asks recall - MARGIN_SE standard errors >= target (see tune)


class NoIndexFits(ValueError):
    """No index the guidelines offer fits the memory budget; the message says what would."""


@dataclass(frozen=True)
class Recommendation:
    """What `recommend` chose. Build it with `faiss.index_factory(d, factory, metric)`, train on
    `n_train` vectors, add with ids, then `tune` `param` over `values` (with `fixed` set too)."""
    factory: str
    n_train: int
    param: str | None              # "nprobe", "efSearch", or None (exact search: nothing to tune)
    values: tuple[int, ...]        # the range to try, cheapest first
    estimated_bytes: int
    reason: str
    fixed: str = ""                # a ParameterSpace string set beside `param`, e.g. "k_factor_rf=4" (RFlat's k_factor)
    metric: str = "cosine"

    @property
    def settings(self) -> list[str]:
        """ParameterSpace strings to try, cheapest first, e.g. ["nprobe=1", "nprobe=2", ...]."""
        return settings_to_try(self.param, self.values, self.fixed)

    def __str__(self) -> str:
        tune = f"; tune {self.param} in {self.values[0]}..{self.values[-1]}" if self.param else ""
        fixed = f" ({self.fixed})" if self.fixed else ""
        train = f", train on {self.n_train:,} vectors" if self.n_train else ", no training"
        return f"{self.factory}{fixed}: ~{self.estimated_bytes / 1e6:,.1f} MB{train}{tune}. Why: {self.reason}"


def settings_to_try(param: str | None, values, fixed: str = "") -> list[str]:
    """ParameterSpace strings, cheapest first: `fixed` with each value of `param`
    (["k_factor_rf=4,efSearch=16", ...]), or `fixed` alone when there is no parameter."""
    if param is None:
        return [fixed]
    return [",".join(s for s in (fixed, f"{param}={v}") if s) for v in values]


# ---------------------------------------------------------------- memory

def parse_bytes(budget) -> float:
    """A memory budget in bytes from a number, None (no limit: inf), or a string like "200MB" or
    "1.5 GiB" (kB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB of 1024). Notebook 08_tuning."""
    if budget is None:
        return math.inf
    if isinstance(budget, (int, float, np.integer, np.floating)):
        value = float(budget)
    else:
        m = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?i?b?)\s*", str(budget).lower())
        if not m:
            raise ValueError(f"memory budget {budget!r}: give bytes or a size like '200MB' or '2GiB'")
        unit = m.group(2).rstrip("b")
        value = float(m.group(1)) * (1024 if unit.endswith("i") else 1000) ** " kmgt".index((unit[:1] or " "))
    if not value > 0:
        raise ValueError(f"memory budget {budget!r} must be positive")
    return value


def _hnsw_bytes(n: int, d: int, M: int) -> float:
    links = 2 * M + M / (M - 1)          # bottom layer 2M, upper layers M for 1/(M-1) of a layer on average
    return n * (4 * d + 4 * links + 12)  # + a level (int32) and an offset (int64) a vector


def estimate_memory(factory: str, n: int, d: int) -> int:
    """The serialized size in bytes of `faiss.index_factory(d, factory)` holding n vectors.

    Understands the strings `recommend` writes: [IDMap,] [PCA<D>|OPQ<m>_<D>,] one of Flat,
    HNSW<M>[,Flat], IVF<K>[_HNSW<M>],Flat|SQ4|SQ6|SQ8|SQfp16|PQ<m>[x<b>][np], PQ<m>[x<b>][np], then [,RFlat].
    Formulas in the module docstring; tests hold them to 5% of the built index plus 64 KiB.
    """
    parts = [p.strip() for p in factory.split(",") if p.strip()]
    total, d_in = 256.0, d                            # headers
    if parts and parts[0] == "IDMap":
        total += 8 * n
        parts = parts[1:]
    if parts and parts[-1] == "RFlat":
        total += 4 * n * d_in
        parts = parts[:-1]
    if parts and (m := re.fullmatch(r"(PCAR?|OPQ(\d+)_)(\d+)", parts[0])):
        d_out = int(m.group(3))
        total += 4 * (d_out * d_in + d_out) + (4 * (d_in * d_in + 2 * d_in) if m.group(1).startswith("PCA") else 0)
        d = d_out
        parts = parts[1:]
    if parts and (m := re.fullmatch(r"IVF(\d+)(?:_HNSW(\d+))?", parts[0])):
        nlist, qm = int(m.group(1)), m.group(2)
        total += _hnsw_bytes(nlist, d, int(qm)) if qm else 4 * nlist * d
        total += 8 * n + 16 * nlist                   # ids in the inverted lists, list sizes
        parts = parts[1:]
    elif parts and (m := re.fullmatch(r"HNSW(\d+)", parts[0])):
        total += _hnsw_bytes(n, d, int(m.group(1)))
        parts = parts[1:] if parts[1:] != ["Flat"] else []
        if parts:
            raise ValueError(f"estimate_memory: HNSW over {parts} is not modelled; use HNSW<M> or HNSW<M>,Flat")
        return int(total)
    if len(parts) != 1:
        raise ValueError(f"estimate_memory cannot read {factory!r}: see its docstring for the strings it models")
    code = parts[0]
    if code == "Flat":
        total += 4 * n * d
    elif code in ("SQ8", "SQ6", "SQ4", "SQfp16"):
        bits = {"SQ8": 8, "SQ6": 6, "SQ4": 4, "SQfp16": 16}[code]
        total += n * math.ceil(d * bits / 8) + (8 * d if bits < 16 else 0)
    elif m := re.fullmatch(r"PQ(\d+)(?:x(\d+))?(?:np)?", code):
        pm, nbits = int(m.group(1)), int(m.group(2) or 8)
        total += n * math.ceil(pm * nbits / 8) + 4 * d * 2 ** nbits
    else:
        raise ValueError(f"estimate_memory cannot read {code!r} in {factory!r}: see its docstring")
    return int(total)


# ---------------------------------------------------------------- the recommender

def nlist_for(n: int) -> tuple[int, str]:
    """nlist (`indexes.suggest_nlist`, the course's one rule) and the coarse quantiser's suffix: from
    a million vectors the guidelines search the centroids with an HNSW32 graph (IVF.._HNSW32)."""
    return suggest_nlist(n), ("_HNSW32" if n >= 1_000_000 else "")


def _train_size(n: int, nlist: int, pq: bool = False) -> int:
    """Training vectors: 30..256 a centroid by the guidelines; we take 64 a centroid (above Faiss's 39)
    for nlist centroids, and for PQ's 256 a sub-quantiser; at most n."""
    return min(n, 64 * max(nlist, 256 if pq else 1))


def _candidates(n: int, d: int, target: float):
    """(factory, n_train, param, values, fixed, reason) in the guidelines' order of preference."""
    nlist, coarse = nlist_for(n)
    ivf = f"IVF{nlist}{coarse}"
    probes = tuple(p for p in NPROBES if p <= nlist)
    if n <= SMALL_N or target > 0.99:
        yield ("IDMap,Flat", 0, None, (), "",
               f"N={n:,} is small or the target {target} asks for exact results: Flat is exact and needs no training")
    if n <= HNSW_MAX_N and d >= 512:
        dr = 256
        yield (f"IDMap,PCA{dr},HNSW32,RFlat", min(n, 64 * dr), "efSearch", EF_SEARCH, f"k_factor_rf={K_FACTOR}",
               f"the budget holds the full vectors and a graph; at d={d} walking a graph over PCA{dr}-reduced vectors "
               f"and re-ranking {K_FACTOR}x candidates exactly (RFlat) beats HNSW on full vectors (notebook 06_hnsw)")
    if n <= HNSW_MAX_N:
        yield ("IDMap,HNSW32,Flat", 0, "efSearch", EF_SEARCH, "",
               "the budget holds the vectors and 32 links each: HNSW is the fastest accurate index (guidelines)")
    yield (f"{ivf},Flat", _train_size(n, nlist), "nprobe", probes, "",
           f"the full vectors fit but not a graph: IVF with nlist={nlist} (indexes.suggest_nlist) stores them in cells")
    yield (f"{ivf},SQfp16", _train_size(n, nlist), "nprobe", probes, "",
           "the full vectors do not fit: 16-bit floats halve them and lose almost nothing")
    for code, bits in (("SQ8", 8), ("SQ6", 6), ("SQ4", 4)):
        yield (f"{ivf},{code}", _train_size(n, nlist), "nprobe", probes, "",
               f"the full vectors do not fit: {bits} bits a dimension ({bits}/32 of float32) keep recall high "
               "and train in a moment")
    if n < MIN_POINTS_PER_CENTROID * 256:
        top = max(1, int(math.log2(max(2, n // MIN_POINTS_PER_CENTROID))))
        codes = sorted(((m, b) for m in (64, 32, 16, 8, 4, 2, 1) if d % m == 0
                        for b in range(top, min(top, 4) - 1, -1)),
                       key=lambda mb: -mb[0] * mb[1])   # most bits a code first; fewer bits, smaller codebooks
        for m, nbits in codes:
            yield (f"IDMap,PQ{m}x{nbits}np", n, None, (), "",
                   f"N={n:,} is below the 256 x 39 vectors 8-bit PQ trains on: {nbits}-bit PQ{m}, scanned exhaustively")
        return
    for m in OPQ_CODES:
        dr = min(4 * m, d - d % m)   # OPQ reduces to D = 4m (4 dims a sub-quantiser) when d allows; m divides D
        if dr < m:
            continue
        yield (f"OPQ{m}_{dr},{ivf},PQ{m}np", _train_size(n, nlist, pq=True), "nprobe", probes, "",
               f"PQ codes of {m} bytes a vector fit the budget: OPQ rotates and reduces to {dr} dims (a rotation keeps "
               f"inner products, unlike PCA's centring) so that PQ{m}'s {m} codes of 4 dims each lose little")


def recommend(n: int, d: int, memory_budget=None, recall_target: float = 0.95,
              metric: str = "cosine") -> Recommendation:
    """The index Faiss's guidelines suggest for n vectors of d dims within `memory_budget`.

    memory_budget: bytes, a string like "200MB", or None for no limit. The first candidate in the
    guidelines' order whose `estimate_memory` fits is returned: Flat (small N or near-exact target),
    PCA-reduced HNSW + exact re-ranking (d >= 512), HNSW32, IVF..,Flat, IVF..,SQfp16/SQ8/SQ6/SQ4,
    OPQ<m>_<4m>,IVF..,PQ<m> with the most bytes that fit (m <= 128). PQ strings end in `np`: no
    polysemous training, which only serves Hamming-threshold search (`ht`, unused here) and slows
    training down (benchmarks/bench_pq_training.py measures it).
    Raises NoIndexFits when none fits. Notebook 08_tuning.
    """
    if int(n) != n or n < 1 or int(d) != d or d < 1:
        raise ValueError(f"n and d must be positive integers, got n={n!r}, d={d!r}")
    if not 0 < recall_target <= 1:
        raise ValueError(f"recall_target {recall_target!r} must be in (0, 1]")
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: use one of {', '.join(METRICS)}")
    n, d, budget = int(n), int(d), parse_bytes(memory_budget)
    smallest = None
    for factory, n_train, param, values, fixed, reason in _candidates(n, d, recall_target):
        size = estimate_memory(factory, n, d)
        if size <= budget:
            return Recommendation(factory, n_train, param, tuple(values), size, reason, fixed, metric)
        smallest = min(smallest or (size, factory), (size, factory))
    raise NoIndexFits(f"nothing fits {memory_budget!r} for {n:,} vectors of {d} dims: the smallest index the "
                      f"guidelines offer, {smallest[1]}, needs about {smallest[0] / 1e6:,.1f} MB (ids alone take "
                      "8 bytes a vector); raise the budget or index fewer vectors")


# ---------------------------------------------------------------- the tuner

@dataclass
class TuneResult:
    """What `tune` found: `setting` (a ParameterSpace string) reached the target on the tuning
    queries when `reached` (its `recall` less `margin` standard errors `se` of that mean was >= target);
    otherwise `setting` is the best one tried and `message` says so."""
    setting: str | None
    recall: float
    reached: bool
    target: float
    rows: list[dict] = field(default_factory=list)
    se: float = 0.0
    margin: float = MARGIN_SE

    @property
    def message(self) -> str:
        noise = f" ± {self.se:.3f}" if self.se else ""
        margin = (f" with a margin of {self.margin:g} standard error{'' if self.margin == 1 else 's'}"
                  if self.se and self.margin else "")   # one query (or identical recalls): no spread to allow for
        if self.reached:
            return f"{self.setting or 'no parameter'} reaches recall {self.recall:.3f}{noise} >= {self.target}{margin}"
        return (f"no setting tried reaches recall {self.target}{margin}: the best, {self.setting}, gives "
                f"{self.recall:.3f}{noise}; widen the range, or choose a bigger index (more bytes a vector, or re-ranking)")


def default_space(index: faiss.Index) -> tuple[str | None, tuple[int, ...]]:
    """The search parameter of `index` (`indexes.search_knob`) and the values to try: NPROBES up to
    nlist for IVF, EF_SEARCH for HNSW; (None, ()) when it has none."""
    knob = search_knob(index)
    if knob is None:
        return None, ()
    name, _, top = knob
    return name, tuple(v for v in (NPROBES if name == "nprobe" else EF_SEARCH) if top is None or v <= top)


def tune(index: faiss.Index, queries, truth, recall_target: float, param: str | None = None,
         values=None, *, fixed: str = "", k: int = 10, own_ids=None, margin: float = MARGIN_SE) -> TuneResult:
    """The cheapest setting of `param` (smallest value, tried in increasing order) whose recall@k on
    `queries` against `truth` (exact top-k ids) reaches `recall_target` with a margin; set on the
    index when found.

    Use tuning queries, never the queries you report. `param`/`values` default to `default_space`;
    `fixed` is a ParameterSpace string set too (e.g. "k_factor_rf=4", ParameterSpace's name for
    RFlat's k_factor). Queries must already be in the index's space (L2-normalised for cosine).
    Recall grows with nprobe and efSearch, so the first value that reaches the target is the
    cheapest. The margin: a recall measured on nq queries is a mean whose standard error is
    std(per-query recall) / sqrt(nq), so a setting just at the target on the tuning queries is
    about as likely to miss it on others; `tune` asks recall - margin x that error >= target
    (margin=0: the mean alone). `own_ids`: when the queries are vectors of the index itself,
    their ids; each query's own id is dropped from its results (and must be absent from `truth`).
    Notebook 08_tuning.
    """
    if not 0 < recall_target <= 1:
        raise ValueError(f"recall_target {recall_target!r} must be in (0, 1]")
    if margin < 0:
        raise ValueError(f"margin {margin!r} must be >= 0 standard errors")
    if param is None:
        param, values = default_space(index)
    values = tuple(values or ())
    if param is not None and not values:
        raise ValueError(f"give values to try for {param}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    space = faiss.ParameterSpace()
    settings = settings_to_try(param, values, fixed)
    rows, best = [], None
    for setting in settings:
        if setting:
            space.set_index_parameters(index, setting)
        _, found = index.search(queries, k + (own_ids is not None))
        if own_ids is not None:
            found = _without_own(found, own_ids, k)
        per_query = recalls_at_k(found, truth, k)
        recall = float(per_query.mean())
        se = float(per_query.std(ddof=1) / math.sqrt(len(per_query))) if len(per_query) > 1 else 0.0
        rows.append({"setting": setting, f"recall@{k}": recall, "standard error": se})
        if best is None or recall > best[1]:
            best = (setting, recall, se)
        if recall - margin * se >= recall_target:
            return TuneResult(setting or None, recall, True, recall_target, rows, se, margin)
    if best[0]:
        space.set_index_parameters(index, best[0])
    return TuneResult(best[0] or None, best[1], False, recall_target, rows, best[2], margin)


def tune_on_own_vectors(index: faiss.Index, x, ids, recall_target: float, metric: str = "cosine", *,
                        param: str | None = None, values=None, fixed: str = "", k: int = 10,
                        n_queries: int = OWN_QUERIES, seed: int = 0, margin: float = MARGIN_SE) -> TuneResult:
    """`tune` with a sample of the indexed vectors `x` (stored under `ids`, in the index's space) as
    queries, for a collection without separate queries (`python -m helpers index --recall`): each
    query's own id is left out of its exact and approximate top-k, so finding itself earns nothing."""
    x, ids = np.ascontiguousarray(x, dtype=np.float32), np.asarray(ids, dtype=np.int64)
    if len(x) <= k:
        raise ValueError(f"tuning recall@{k} on the collection itself needs more than {k} vectors, got {len(x)}")
    pick = np.random.default_rng(seed).choice(len(x), min(n_queries, len(x)), replace=False)
    truth = ground_truth(x, ids, x[pick], k + 1, "l2" if metric == "l2" else "cosine").ids
    return tune(index, x[pick], _without_own(truth, ids[pick], k), recall_target, param, values,
                fixed=fixed, k=k, own_ids=ids[pick], margin=margin)


def _without_own(found: np.ndarray, own_ids, k: int) -> np.ndarray:
    """The first k ids of each row of `found` (k + 1 wide) once that row's own id is taken out."""
    return np.array([np.delete(row, np.flatnonzero(row == own)[:1])[:k] for row, own in zip(found, own_ids)])


def measure_settings(index: faiss.Index, settings, queries, truth, /, k: int = 10, repeats: int = 3,
                     **columns) -> list[dict]:
    """recall@k and batch QPS (median of `repeats`) of `index` at each ParameterSpace string in
    `settings` (e.g. ["nprobe=1", "nprobe=4"]), one row each, with `columns` (e.g. nlist=1024)
    added to every row; the last setting is left on the index. Notebook 08_tuning's grids."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    space, rows = faiss.ParameterSpace(), []
    for setting in settings:
        space.set_index_parameters(index, setting)
        found = index.search(queries, k)[1]
        seconds = median_seconds(lambda: index.search(queries, k), repeats)
        rows.append({**columns, "setting": setting, f"recall@{k}": recall_at_k(found, truth, k),
                     "QPS": len(queries) / seconds})
    return rows


def pareto_front(rows, recall: str = "recall@10", qps: str = "QPS") -> list[dict]:
    """The rows that no other row beats on both `recall` and `qps` (higher is better for both),
    sorted by recall: the settings worth choosing between. Notebook 08_tuning draws them."""
    rows = sorted(rows, key=lambda r: (-r[recall], -r[qps]))
    front, fastest = [], -math.inf
    for row in rows:                    # from the most accurate down: keep each row faster than all before
        if row[qps] > fastest:
            front.append(row)
            fastest = row[qps]
    return front[::-1]
