"""What the BLAS kernels `helpers.blas` chooses are worth: Faiss with OpenBLAS's own choice and with
OPENBLAS_CORETYPE set for this CPU, side by side in one run.

OpenBLAS picks its kernels once, when it loads, so each side runs in its own fresh process that
imports faiss first (the "own choice" one without the variable in its environment), then asks
`helpers.blas.faiss_kernels` which kernels it got; the two alternate, `--repeats` times each, and the median of each is
compared. Measured: exact search (IndexFlatIP,
a batch of queries large enough for Faiss to use BLAS) and k-means (IVF training), on seeded
random vectors of the course's dimension. Where OpenBLAS already picks the chosen kernels there is
nothing to compare, and it says so.

    python benchmarks/bench_blas.py                   # 20,000 x 1280, 1,000 queries, IVF256
    python benchmarks/bench_blas.py --n 5000 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks._goal import goal  # noqa: E402
from helpers import blas  # noqa: E402

GOAL = 1.0   # the chosen kernels are never slower than OpenBLAS's own choice
OPS = {"search": "exact search", "kmeans": "k-means"}

WORK = """
import json, sys, time, warnings
import faiss, numpy as np   # first: OpenBLAS picks its kernels now, from this process's environment
warnings.simplefilter("ignore")   # importing helpers after faiss warns about exactly that
from helpers.blas import faiss_kernels
kernels = faiss_kernels()
n, d, nq, nlist = map(int, sys.argv[1:5])
rng = np.random.default_rng(0)
xb = rng.standard_normal((n, d), dtype=np.float32)
xq = rng.standard_normal((nq, d), dtype=np.float32)
flat = faiss.IndexFlatIP(d)
flat.add(xb)
flat.search(xq[:64], 10)
t = time.perf_counter(); flat.search(xq, 10); search = time.perf_counter() - t
ivf = faiss.index_factory(d, f"IVF{nlist},Flat")
t = time.perf_counter(); ivf.train(xb); kmeans = time.perf_counter() - t
print(json.dumps({"kernels": kernels, "search": search, "kmeans": kmeans}))
"""


def run_side(env: dict, args) -> dict:
    """One fresh process: its kernels and seconds (faiss imported before anything sets the variable)."""
    done = subprocess.run([sys.executable, "-c", WORK, str(args.n), str(args.d), str(args.nq), str(args.nlist)],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        sys.exit(f"the measuring process failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def skip(reason: str) -> int:
    print(reason)
    for op in OPS:
        goal(f"blas_chosen_kernels_{op}_speedup", None, GOAL, skipped=reason)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="database vectors")
    ap.add_argument("--d", type=int, default=1280, help="dimension (the course's features: 1280 or 2048)")
    ap.add_argument("--nq", type=int, default=1000, help="queries in the exact-search batch")
    ap.add_argument("--nlist", type=int, default=256, help="k-means centroids (IVF training)")
    ap.add_argument("--repeats", type=int, default=3, help="processes per side, alternating")
    args = ap.parse_args(argv)

    own = {k: v for k, v in os.environ.items() if k != blas.VARIABLE}
    chosen = blas.kernels_for(blas.cpu_flags()) if sys.platform.startswith("linux") else None
    if chosen is None:
        return skip("this CPU has neither AVX-512 nor AVX2 + FMA (or is not Linux): helpers.blas sets nothing")
    sides = {"own choice": [], "chosen": []}
    for _ in range(args.repeats):
        sides["own choice"].append(run_side(own, args))
        sides["chosen"].append(run_side({**own, blas.VARIABLE: chosen}, args))
        kernels = {name: runs[0]["kernels"] for name, runs in sides.items()}
        if None in kernels.values():
            return skip("this faiss does not bundle OpenBLAS: helpers.blas has nothing to choose")
        if kernels["own choice"].lower() == kernels["chosen"].lower():
            return skip(f"OpenBLAS picks {kernels['chosen']} itself on this CPU: nothing to gain here")
    print(f"{args.n:,} x {args.d} vectors, {args.nq:,} queries, IVF{args.nlist} k-means; "
          f"{args.repeats} processes a side; Faiss's OpenBLAS kernels: {kernels['own choice']} by its own "
          f"choice, {kernels['chosen']} with {blas.VARIABLE}={chosen}")
    median = {name: {op: statistics.median(r[op] for r in runs) for op in OPS} for name, runs in sides.items()}
    for op, label in OPS.items():
        print(f"{label}: {median['own choice'][op]:.2f} s with {kernels['own choice']}, "
              f"{median['chosen'][op]:.2f} s with {kernels['chosen']}")
    for op in OPS:
        goal(f"blas_chosen_kernels_{op}_speedup", median["own choice"][op] / median["chosen"][op], GOAL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
