"""What polysemous training costs: IVF,PQ trained from a factory string with and without `np`.

`faiss.index_factory(d, "IVF..,PQm")` turns on `do_polysemous_training`, which reorders PQ's
centroids so that Hamming distances between codes follow real distances; only a search with a
Hamming threshold (`ht`) uses that, and the course never does. The suffix `np` turns it off.
Both variants train on the same vectors (seeded normal, L2-normalised) in one run, one after the
other, and give identical search results apart from the centroids' numbering; the ratio of
their training times is the goal line.

    python benchmarks/bench_pq_training.py                    # 10,000 x 1280, IVF64,PQ64 and IVF64,PQ32x8
    python benchmarks/bench_pq_training.py --n 5000 --d 256 --codes PQ16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import helpers  # noqa: E402,F401  (before faiss: it chooses Faiss's BLAS kernels, helpers/blas.py)
import faiss  # noqa: E402
from benchmarks._goal import goal  # noqa: E402

GOAL = 5.0   # np trains at least 5x faster


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
    args = ap.parse_args(argv)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
