"""The course's recommender + tuner against autofaiss, side by side on the course database.

    nice python benchmarks/bench_recommend.py            # full-scale course database (100,000 vectors)
    python benchmarks/bench_recommend.py --n 20000       # its first 20,000 vectors: a check in minutes

For three memory budgets (no limit, 1/4 and 1/16 of Flat's memory) and a recall@10 target
(0.95; 0.85 at 1/16):
- ours: `helpers.tuning.recommend` picks a factory string, we build it, `tune` picks the cheapest
  search setting reaching the target (by its margin of one standard error) on the TUNING half of
  the real queries;
- autofaiss 2.18: `build_index` with the same budget picks and tunes its own index (its tuning
  aims at a query-time limit, 10 ms by default, not at a recall).
Both are then measured on the TEST half of the queries: recall@10, QPS, memory (serialized
size), build time. Vectors are L2-normalised; the metric is inner product (cosine) for both.

autofaiss pins numpy < 2, so this script installs it into its own throwaway virtual environment
under build/ (never the project's) with `python3 -m venv` and pip, and runs it there in a
subprocess; if it cannot be installed, it says so and prints our side only. That venv gets
faiss-cpu 1.7.4: autofaiss 2.18 builds OPQ with keyword arguments faiss 1.15 no longer accepts.
Both indexes are searched here, by this project's faiss, with the same threads and queries, and
both sides run the BLAS kernels `helpers.blas` chooses for this CPU (OPENBLAS_CORETYPE, which the
autofaiss process inherits): both faiss wheels' OpenBLAS otherwise fall back to SSE3 kernels here.
Ours trains with BLAS forced (`helpers.indexes.blas_threshold(0)`, as `helpers.store.build` does,
for PQ's k-means on short sub-vectors); faiss 1.7.4 takes BLAS by itself from 20 vectors a batch.
autofaiss's builds are kept under build/bench_recommend/, named by the index it chose and checked
against a fingerprint of the vectors and the BLAS kernels it ran: when it chooses the same index for another budget (at 100k x
1280 it picks one OPQ+IVF+PQ for both 1/4 and 1/16) or in a later run, that build is reused and
the table says so; its build time is the one measured when it was built. --rebuild-autofaiss
builds afresh.

"QPS at equal recall": autofaiss's index is swept over its search parameter on the test queries
(a favour to it: tuned on the reported queries) and we take its fastest point whose recall@10 is
at least ours; when none is, its most accurate point. The goal lines:
    goal: recommend_meets_target_<budget> measured <test recall@10> target >=<target>
    goal: recommend_vs_autofaiss_qps_at_equal_recall_<budget> measured <our QPS / theirs> target >=1.0x
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import helpers  # noqa: E402,F401  (before faiss: it chooses Faiss's BLAS kernels, helpers/blas.py)
import faiss  # noqa: E402
from _goal import goal  # noqa: E402
from helpers import blas  # noqa: E402
from helpers.indexes import build  # noqa: E402
from helpers.presentation import Table  # noqa: E402
from helpers.tuning import NoIndexFits, default_space, measure_settings, recommend, tune  # noqa: E402

K = 10
VENV = ROOT / "build" / "autofaiss-venv"
WORK = ROOT / "build" / "bench_recommend"
AUTOFAISS_PINS = ["autofaiss==2.18.0", "pyarrow<16", "faiss-cpu==1.7.4"]   # its OPQ code predates faiss 1.8's API
TIMED_OUT: dict[str, str] = {}   # index key -> the budget whose autofaiss build ran past the timeout
BUDGETS = (("unlimited", None, 0.95), ("flat_over_4", 1 / 4, 0.95), ("flat_over_16", 1 / 16, 0.85))

AUTOFAISS_RUN = r"""
import json, sys, time
import faiss
import numpy as np
from autofaiss import build_index
xb = np.load(sys.argv[1])
start = time.perf_counter()
index, infos = build_index(xb, save_on_disk=False, max_index_memory_usage=sys.argv[4], current_memory_available="16G",
                           metric_type="ip", min_nearest_neighbors_to_retrieve=10, nb_cores=int(sys.argv[5]), verbose=40)
if index is None:
    sys.exit("autofaiss built no index (see its log lines above)")
infos["build_s"] = time.perf_counter() - start
faiss.write_index(index, sys.argv[2])
json.dump(infos, open(sys.argv[3], "w"))
"""

AUTOFAISS_KEY = r"""
import sys
from autofaiss.external.optimize import get_optimal_index_keys_v2
keys = get_optimal_index_keys_v2(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
print(keys[0] if keys else "")
"""


def course_database(n: int | None):
    """The full-scale course database (this worktree's data), L2-normalised, and its real queries."""
    from helpers.backbones import load_backbone
    from helpers.database import CourseDatabase
    from helpers.datasets import ensure_dataset
    from helpers.features import load_or_extract
    from helpers.manifest import refresh
    from helpers.settings import load_settings

    settings = load_settings({**os.environ, "SIMSEARCH_SCALE": "full"})
    manifest = refresh(ensure_dataset(settings), settings.work_dir / "manifest.csv", progress=False).manifest
    features, _ = load_or_extract(manifest, load_backbone(settings.backbone, settings.weights), settings.work_dir,
                                  progress=False)
    db = CourseDatabase(features, manifest, "full")
    xb, ids, xq = db.xb[:n].copy(), db.ids[:n].copy(), db.queries.copy()
    faiss.normalize_L2(xb)
    faiss.normalize_L2(xq)
    return xb, ids, xq


def exact_truth(xb, ids, xq) -> np.ndarray:
    flat = faiss.IndexIDMap(faiss.IndexFlatIP(xb.shape[1]))
    flat.add_with_ids(xb, ids)
    return flat.search(xq, K)[1]


def build_ours(rec, xb, ids, seed: int):
    """The recommended index built as `helpers.store.build` builds it (`helpers.indexes.build`)."""
    times = {}
    index = build(rec.factory, xb, ids, "cosine", n_train=rec.n_train or None, seed=seed, times=times)
    return index, times["train s"] + times["add s"]


def autofaiss_ready(log) -> str | None:
    """The autofaiss venv's python, installing it first if needed; None (and why, printed) if it cannot."""
    python = VENV / "bin" / "python"
    check = [str(python), "-c", "import autofaiss, faiss; assert faiss.__version__ == '1.7.4'"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(python)
    print(f"installing {' '.join(AUTOFAISS_PINS)} into its own throwaway venv {VENV} (not the project's: "
          "autofaiss pins numpy < 2) ...", flush=True)
    for cmd in (["python3", "-m", "venv", str(VENV)],
                [str(python), "-m", "pip", "install", "--quiet", *AUTOFAISS_PINS]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        log.write(done.stdout + done.stderr)
        if done.returncode:
            print(f"autofaiss cannot be installed ({' '.join(cmd[:3])} failed; see {log.name}): "
                  "printing our side only", flush=True)
            return None
    return str(python) if subprocess.run(check, capture_output=True).returncode == 0 else None


def fingerprint(xb) -> str:
    return f"{xb.shape[0]}x{xb.shape[1]}:" + hashlib.sha1(xb.tobytes()).hexdigest()[:16]


def run_autofaiss(python, xb_path, xb_print, shape, name, budget_bytes, cores, log, timeout_s, rebuild):
    """autofaiss's index for this budget (ids are row numbers) and its infos, or (None, None).

    The index autofaiss will choose is asked first (a cheap call); a kept build of that index over
    the same vectors is reused, infos["reused_from"] naming the budget it was built for."""
    memory = f"{int(budget_bytes)}B" if budget_bytes else "8G"   # no limit: 8G is 16x Flat at 100k x 1280; autofaiss
    # returns no index when the limit exceeds current_memory_available (16G here)
    asked = subprocess.run([python, "-c", AUTOFAISS_KEY, str(shape[0]), str(shape[1]), memory], capture_output=True, text=True)
    key = asked.stdout.strip().splitlines()[-1] if asked.returncode == 0 and asked.stdout.strip() else ""
    stem = WORK / ("autofaiss_" + (re.sub(r"[^A-Za-z0-9]+", "_", key) if key else name))
    index_path, infos_path = stem.with_suffix(".index"), stem.with_suffix(".json")
    if not rebuild and index_path.exists() and infos_path.exists():
        infos = json.loads(infos_path.read_text())   # our own file, trusted
        if (infos.get("fingerprint") == xb_print and infos.get("index_key") == key
                and infos.get("blas") == os.environ.get(blas.VARIABLE)):   # build times under the same kernels
            print(f"  autofaiss chooses {key}: reusing its build for {infos['built_for']} "
                  f"({infos['build_s']:.0f} s when built)", flush=True)
            return faiss.read_index(str(index_path)), {**infos, "reused_from": infos["built_for"]}
    if key and key in TIMED_OUT:
        print(f"  autofaiss chooses {key} again: its build already ran past --autofaiss-timeout for "
              f"{TIMED_OUT[key]}; not built twice", flush=True)
        return None, None
    index_path.unlink(missing_ok=True)
    print(f"  autofaiss chooses {key or '(it did not say)'}: building it", flush=True)
    try:
        done = subprocess.run([python, "-c", AUTOFAISS_RUN, str(xb_path), str(index_path), str(infos_path), memory,
                               str(cores)], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        print(f"  autofaiss did not finish within {timeout_s} s for {name} (--autofaiss-timeout)", flush=True)
        TIMED_OUT[key] = name
        return None, None
    log.write(done.stdout + done.stderr)
    log.flush()
    if done.returncode or not index_path.exists():   # autofaiss gives (None, None) when it finds nothing to build
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        print(f"  autofaiss failed for {name}: {tail[0]}", flush=True)
        return None, None
    infos = {**json.loads(infos_path.read_text()), "fingerprint": xb_print, "built_for": name,
             "blas": os.environ.get(blas.VARIABLE)}
    infos_path.write_text(json.dumps(infos))
    return faiss.read_index(str(index_path)), infos


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="use the first n database vectors (default: all)")
    parser.add_argument("--repeats", type=int, default=15, help="timing repeats (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="Faiss threads for both sides")
    parser.add_argument("--no-autofaiss", action="store_true", help="our side only")
    parser.add_argument("--autofaiss-timeout", type=int, default=3600, help="seconds one autofaiss build may take")
    parser.add_argument("--rebuild-autofaiss", action="store_true", help="do not reuse kept autofaiss builds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    log = (WORK / "autofaiss.log").open("a")

    xb, ids, xq = course_database(args.n)
    order = np.random.default_rng(args.seed).permutation(len(xq))
    tune_q, test_q = xq[np.sort(order[: len(xq) // 2])], xq[np.sort(order[len(xq) // 2:])]
    tune_truth, test_truth = exact_truth(xb, ids, tune_q), exact_truth(xb, ids, test_q)
    n, d = xb.shape
    flat_bytes = n * d * 4
    print(f"database {n:,} x {d}, {len(tune_q)} tuning + {len(test_q)} test queries (real images held out), "
          f"{args.threads} threads, Flat {flat_bytes / 1e6:.0f} MB; faiss {faiss.__version__}; BLAS kernels "
          f"{blas.faiss_kernels()} (autofaiss's process gets {blas.VARIABLE}={os.environ.get(blas.VARIABLE)} too)",
          flush=True)

    python = None if args.no_autofaiss else autofaiss_ready(log)
    xb_path = WORK / "xb.npy"
    xb_print = fingerprint(xb)
    if python:
        np.save(xb_path, xb)
    rows, goals = [], []
    by_id = np.argsort(ids)   # autofaiss numbers vectors by row: the same truth, as row numbers
    row_truth = by_id[np.searchsorted(ids[by_id], test_truth)]
    for name, fraction, target in BUDGETS:
        budget = None if fraction is None else fraction * flat_bytes
        shown = "no limit" if budget is None else f"{budget / 1e6:.0f} MB"
        print(f"\n== budget {name} ({shown}), target recall@10 {target}", flush=True)
        try:
            rec = recommend(n, d, budget, target, "cosine")
        except NoIndexFits as err:
            print(f"  ours: {err}")
            goals.append(goal(f"recommend_meets_target_{name}", None, target, "", skipped=str(err)))
            continue
        print(f"  ours: {rec}", flush=True)
        index, build_s = build_ours(rec, xb, ids, args.seed)
        tuned = tune(index, tune_q, tune_truth, target, rec.param, rec.values, fixed=rec.fixed)
        print(f"  tuned on the tuning queries: {tuned.message}", flush=True)
        ours = {"side": "ours", "budget": name, "index": rec.factory, "setting": tuned.setting,
                **measure_settings(index, [tuned.setting or ""], test_q, test_truth, K, args.repeats)[0],
                "memory MB": faiss.serialize_index(index).nbytes / 1e6, "build s": build_s}
        rows.append(ours)
        goals.append(goal(f"recommend_meets_target_{name}", ours["recall@10"], target, ""))
        del index
        if not python:
            continue
        theirs, infos = run_autofaiss(python, xb_path, xb_print, xb.shape, name, budget, args.threads, log,
                                      args.autofaiss_timeout, args.rebuild_autofaiss)
        if theirs is None:
            continue
        faiss.ParameterSpace().set_index_parameters(theirs, infos["index_param"])
        as_tuned = measure_settings(theirs, [infos["index_param"]], test_q, row_truth, K, args.repeats)[0]
        rows.append({"side": "autofaiss", "budget": name, "index": infos["index_key"], **as_tuned,
                     "memory MB": faiss.serialize_index(theirs).nbytes / 1e6,
                     "build s": infos["build_s"] if "reused_from" not in infos else f"{infos['build_s']:.1f} (for {infos['reused_from']})"})
        param, values = default_space(theirs)
        settings = [f"{param}={v}" for v in values] if param else []
        curve = measure_settings(theirs, settings, test_q, row_truth, K, args.repeats) + [as_tuned]
        good = [r for r in curve if r["recall@10"] >= ours["recall@10"]]
        peer = max(good, key=lambda r: r["QPS"]) if good else max(curve, key=lambda r: (r["recall@10"], r["QPS"]))
        print(f"  autofaiss at equal recall: {peer['setting']} recall {peer['recall@10']:.3f}, {peer['QPS']:,.0f} QPS"
              + ("" if good else f" (it never reaches our {ours['recall@10']:.3f})"), flush=True)
        goals.append(goal(f"recommend_vs_autofaiss_qps_at_equal_recall_{name}", ours["QPS"] / peer["QPS"], 1.0))
        del theirs
    print()
    print(Table(rows, "ours and autofaiss on the test queries").to_text())
    print("\n" + "\n".join(goals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
