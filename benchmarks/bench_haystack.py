"""Does the course's haystack behave like real image features? Distractors against real images.

For each real image set that installs from Debian's packages (helpers.haystack: Fashion-MNIST's
product photos, `apt-get install dataset-fashion-mnist`; Openclipart's clip-art PNGs,
`apt-get install openclipart-png`), with the course's backbone and metric (cosine):
- database A: N real features (N = 10,000 by default, fewer where the set has fewer images);
- database B: the first 90 of them (as many as the course's sample puts in its database) plus
  N - 90 distractors fitted on those 90 (helpers.distractors), for today's model (`tail=power_law`,
  a full-rank spectrum) and the earlier one (`tail=none`, the 89 measured directions alone);
- the same held-out real queries search both.
Measured on each (helpers.haystack.index_recalls): recall@10 against nprobe (IVF at
suggest_nlist) and against efSearch (HNSW32); IVF,PQ with m = 16/32/64, PCA-then-PQ and OPQ at
64 bytes a vector, at nprobe 16; the principal directions that hold 90% of the variance; and, as
bench_distractors measured before, the share of distractors in each query's top-10 when as many
distractors as real images are searched together (0.5 if indistinguishable).

Goal lines (benchmarks/_goal.py), for today's model on each set: the largest recall@10 gap
between A and B over all settings <= 0.05; B's directions for 90% within 0.67-1.5x of A's; the
compressed indexes ranked by recall the same on A and B. The earlier model's figures are printed
beside them as `reported:` lines. Features are extracted once and cached in build/bench_haystack/;
the figures go to build/bench_haystack/results.json, which notebook 03_flat_index reads.

    make haystack-data                                        # the two Debian packages (as root)
    python benchmarks/bench_haystack.py                       # both sets, N = 10,000, 200 queries
    python benchmarks/bench_haystack.py --sets fashion_mnist --n 2000 --queries 100   # a quicker check
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import helpers  # noqa: E402,F401  (before faiss: it chooses Faiss's BLAS kernels, helpers/blas.py)
import faiss  # noqa: E402
from benchmarks._goal import goal  # noqa: E402
from helpers.backbones import load_backbone  # noqa: E402
from helpers.datasets import DatasetUnavailable  # noqa: E402
from helpers.distractors import DistractorModel  # noqa: E402
from helpers.haystack import BENCH_RESULTS, REAL_SETS, compare_haystacks, real_features  # noqa: E402
from helpers.indexes import normalize  # noqa: E402

OUT = BENCH_RESULTS.parent
MAX_GAP = 0.05
RATIO = (0.67, 1.5)


def distractor_share(real, fit, queries, tail: str, k: int = 10) -> float:
    """Share of distractors in the top-k among as many distractors as real images (0.5: indistinguishable)."""
    fake = DistractorModel.fit(fit, tail=tail).sample(len(real), seed=1)[0]
    s_real = faiss.knn(queries, real, k, metric=faiss.METRIC_INNER_PRODUCT)[0]
    s_fake = faiss.knn(queries, fake, k, metric=faiss.METRIC_INNER_PRODUCT)[0]
    return float(np.mean(np.argsort(-np.hstack([s_real, s_fake]), axis=1, kind="stable")[:, :k] >= k))


def verdicts(a: dict, b: dict) -> dict:
    """The three goals' measurements for database B against A."""
    gaps = {key: abs(a["recall"][key] - b["recall"][key]) for key in a["recall"]}
    worst = max(gaps, key=gaps.get)
    compressed = [key for key in a["recall"] if "PQ" in key]
    rank = {name: sorted(compressed, key=lambda key: -r["recall"][key]) for name, r in (("A", a), ("B", b))}
    return {"max gap": gaps[worst], "worst setting": worst,
            "directions ratio": b["directions for 90%"] / a["directions for 90%"],
            "same ranking": rank["A"] == rank["B"], "ranking A": rank["A"], "ranking B": rank["B"]}


def run_set(name: str, args, backbone) -> dict | None:
    start = time.perf_counter()
    try:
        fs, _, status = real_features(name, backbone, OUT, args.n + args.queries, progress=True)
    except DatasetUnavailable as err:
        print(f"skipped: {name}: {err}", flush=True)
        return None
    x = normalize(fs.vectors)
    order = np.random.default_rng(args.seed).permutation(len(x))
    n = min(args.n, len(x) - args.queries)
    queries, real = x[order[:args.queries]], x[order[args.queries:args.queries + n]]
    print(f"\n{name}: {REAL_SETS[name]}; {len(x):,} images, {fs.meta['backbone']} features ({status}, "
          f"{time.perf_counter() - start:.0f} s); A = {n:,} real, B = {args.fit} real + {n - args.fit:,} "
          f"distractors; {len(queries)} held-out real queries", flush=True)
    results = compare_haystacks(real, queries, args.fit, tails=("power_law", "none"), seed=args.seed)
    keys = list(results["A"]["recall"])
    print(f"{'recall@10':<36}" + "".join(f"{db:>14}" for db in results))
    for key in keys:
        print(f"{key:<36}" + "".join(f"{r['recall'][key]:>14.3f}" for r in results.values()))
    print(f"{'directions for 90% of the variance':<36}" + "".join(f"{r['directions for 90%']:>14}" for r in results.values()))
    print(f"{'cosine of the nearest, median':<36}" + "".join(f"{r['nearest cosine, median']:>14.3f}" for r in results.values()))
    fit = real[:args.fit]
    for tail in ("power_law", "none"):
        v = verdicts(results["A"], results[f"B {tail}"])
        v["distractor share"] = distractor_share(real[args.fit:], fit, queries, tail)
        results[f"B {tail}"]["verdict"] = v
        print(f"B {tail}: largest gap {v['max gap']:.3f} at {v['worst setting']}; compressed ranking "
              f"A {' > '.join(v['ranking A'])} | B {' > '.join(v['ranking B'])}; distractors in a mixed "
              f"top-10 {v['distractor share']:.2f} (0.50 if indistinguishable)", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=list(REAL_SETS), choices=list(REAL_SETS))
    ap.add_argument("--n", type=int, default=10_000, help="database size (A and B)")
    ap.add_argument("--queries", type=int, default=200, help="held-out real queries")
    ap.add_argument("--fit", type=int, default=90, help="real vectors the distractors are fitted on")
    ap.add_argument("--backbone", default="auto", help="as SIMSEARCH_BACKBONE (auto: ResNet50 where its weights are)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    backbone = load_backbone(args.backbone, verbose=False)
    print(f"backbone: {backbone.describe()}")
    report = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "backbone": backbone.name, "dim": backbone.dim,
              "n": args.n, "fit": args.fit, "queries": args.queries, "sets": {}}
    for name in args.sets:
        results = run_set(name, args, backbone)
        if results is not None:
            report["sets"][name] = results
    print()
    for name, results in report["sets"].items():
        for tail, prefix in (("power_law", "goal"), ("none", "reported")):
            v = results[f"B {tail}"]["verdict"]
            label = f"haystack_{name}"
            if prefix == "goal":
                goal(f"{label}_max_recall@10_gap", v["max gap"], MAX_GAP, "", higher_is_better=False)
                goal(f"{label}_directions_for_90pct_B_over_A", v["directions ratio"], RATIO[0], "x", upper=RATIO[1])
                goal(f"{label}_compressed_ranking_same", float(v["same ranking"]), 1, "")
            else:
                print(f"reported: {label}_earlier_model (tail=none): max_recall@10_gap {v['max gap']:.4g}, "
                      f"directions_for_90pct_B_over_A {v['directions ratio']:.4g}x, compressed_ranking_same "
                      f"{int(v['same ranking'])}")
    if report["sets"]:
        OUT.mkdir(parents=True, exist_ok=True)
        BENCH_RESULTS.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
