"""What PQ training costs: polysemous training (`np`), and Faiss's BLAS threshold.

`faiss.index_factory(d, "IVF..,PQm")` turns on `do_polysemous_training`, which reorders PQ's
centroids so that Hamming distances between codes follow real distances; only a search with a
Hamming threshold (`ht`) uses that, and the course never does. The suffix `np` turns it off.
Both variants train on the same vectors (seeded normal, L2-normalised) in one run, one after the
other, and give identical search results apart from the centroids' numbering; the ratio of
their training times is the goal line.

PQ trains a k-means on each sub-vector, of d/m dimensions; faiss 1.15.1 computes its distances
pair by pair unless points x dimensions reach `distance_compute_blas_threshold` (128,000), so
OPQ64_128 (notebook 05_product_quantization's quick scale: 2-d sub-vectors, 10,000 points) trains far slower than with
BLAS forced (`helpers.indexes.blas_threshold(0)`, as notebook 05_product_quantization and `helpers.store.build`
train). The OPQ matrix alone is trained both ways, alternating, `--repeats` times; the ratio of
the medians is the second goal line.

    python benchmarks/bench_pq_training.py                    # 10,000 x 1280, IVF64,PQ64 and IVF64,PQ32x8, OPQ64_128
    python benchmarks/bench_pq_training.py --n 5000 --d 256 --codes PQ16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import helpers  # noqa: E402,F401  (before faiss: it chooses Faiss's BLAS kernels, helpers/blas.py)
import faiss  # noqa: E402
from benchmarks._goal import goal  # noqa: E402
from helpers.indexes import blas_threshold  # noqa: E402

GOAL = 5.0   # np trains at least 5x faster
BLAS_GOAL = 2.0   # OPQ trains at least 2x faster with BLAS forced than with Faiss's own choice


def train_seconds(factory: str, x: np.ndarray) -> float:
    index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    start = time.perf_counter()
    index.train(x)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="training vectors (default 10,000: 39 x 256 for 8-bit PQ)")
    ap.add_argument("--d", type=int, default=1280, help="dimension (default 1280, the fallback backbone's)")
    ap.add_argument("--nlist", type=int, default=64)
    ap.add_argument("--codes", nargs="+", default=["PQ64", "PQ32x8"])
    ap.add_argument("--opq-niter", type=int, default=2, help="OPQ64_128's iterations (Faiss's default: 50)")
    ap.add_argument("--repeats", type=int, default=3, help="OPQ trainings a side, alternating")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    x = np.random.default_rng(0).standard_normal((args.n, args.d)).astype("float32")
    faiss.normalize_L2(x)
    print(f"{args.n:,} x {args.d} training vectors, IVF{args.nlist}, {faiss.omp_get_max_threads()} threads, "
          f"faiss {faiss.__version__}")
    ratios = []
    for code in args.codes:
        plain = train_seconds(f"IVF{args.nlist},{code}", x)
        fast = train_seconds(f"IVF{args.nlist},{code}np", x)
        ratios.append(plain / fast)
        print(f"IVF{args.nlist},{code}: {plain:6.1f} s with polysemous training, {fast:5.1f} s with np: "
              f"{ratios[-1]:.1f}x")
    goal("pq_np_training_speedup", min(ratios), GOAL)
    blas_goal(x, args)
    return 0


def blas_goal(x: np.ndarray, args) -> None:
    """OPQ64_128's training with Faiss's own threshold and with BLAS forced, alternating."""
    default = faiss.cvar.distance_compute_blas_threshold
    if default == 0:
        goal("opq_training_blas_forced_speedup", None, BLAS_GOAL, skipped="Faiss's threshold is 0 already: BLAS throughout")
        return
    seconds = {default: [], 0: []}
    for _ in range(args.repeats):
        for threshold in seconds:
            opq = faiss.OPQMatrix(x.shape[1], 64, 128)
            opq.niter = args.opq_niter
            with blas_threshold(threshold):
                start = time.perf_counter()
                opq.train(x)
                seconds[threshold].append(time.perf_counter() - start)
    own, forced = (statistics.median(seconds[t]) for t in (default, 0))
    print(f"OPQ64_128 (2-d PQ sub-vectors), {args.opq_niter} iterations, median of "
          f"{args.repeats}: {own:.2f} s with Faiss's threshold ({default:,}), {forced:.2f} s with BLAS forced")
    goal("opq_training_blas_forced_speedup", own / forced, BLAS_GOAL)


if __name__ == "__main__":
    sys.exit(main())
