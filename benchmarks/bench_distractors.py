"""How realistic are the distractors? Real images against distractors, at equal numbers, as
neighbours of real queries: one run on Fashion-MNIST's real labelled images (Debian's
dataset-fashion-mnist or torchvision's copy, see helpers.datasets; 5,000 by default).

Features are L2-normalised and compared by inner product (cosine, the course's metric). The
distractor model is fitted on a few real features (as the course fits it on its sample),
then as many distractors are drawn as there are other real images. If distractors were
indistinguishable from real images, half of each query's top-10 among both would be
distractors; fewer means they lie farther from real queries than real images do.

    python benchmarks/bench_distractors.py                 # 500 images a class, fit on 90 and 900
    python benchmarks/bench_distractors.py --per-class 200 --fit 90
    python benchmarks/bench_distractors.py --per-class 20 --fit 9 --queries 20   # a check that it runs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import helpers  # noqa: E402,F401  (before faiss: it chooses Faiss's BLAS kernels, helpers/blas.py)
import faiss  # noqa: E402
from helpers.backbones import load_backbone  # noqa: E402
from helpers.datasets import DatasetUnavailable, build_fashion_mnist  # noqa: E402
from helpers.distractors import DistractorModel  # noqa: E402
from helpers.features import extract  # noqa: E402
from helpers.indexes import normalize  # noqa: E402
from helpers.manifest import scan  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=500, help="images of each of the 10 classes")
    ap.add_argument("--fit", type=int, nargs="+", default=[90, 900], help="real features the model is fitted on")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_distractors_") as tmp:
        try:
            folder, origin = build_fashion_mnist(Path(tmp) / "images", per_class=args.per_class)
        except DatasetUnavailable as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        manifest = scan(folder, progress=False).manifest
        fs = extract(manifest, load_backbone(args.backbone, verbose=False), progress=False)
    x, k = normalize(fs.vectors), args.k
    print(f"{len(x)} Fashion-MNIST images ({origin}), {fs.meta['backbone']} features, k={k}")
    order = np.random.default_rng(0).permutation(len(x))
    for n_fit in args.fit:
        fit, queries, others = np.split(order, [n_fit, n_fit + args.queries])
        distractors = DistractorModel.fit(x[fit]).sample(len(others), seed=1)[0]
        s_real, _ = faiss.knn(x[queries], x[others], k, metric=faiss.METRIC_INNER_PRODUCT)
        s_fake, _ = faiss.knn(x[queries], distractors, k, metric=faiss.METRIC_INNER_PRODUCT)
        mixed = np.argsort(-np.hstack([s_real, s_fake]), axis=1, kind="stable")[:, :k]   # the top-k of both
        print(f"fit on {n_fit}: {len(others)} real images and {len(others)} distractors; cosine to the "
              f"nearest, median: real {np.median(s_real[:, 0]):.3f}, distractor {np.median(s_fake[:, 0]):.3f}; "
              f"distractors in the mixed top-{k}: {np.mean(mixed >= k):.2f} (0.50 if indistinguishable)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
