"""Reduced-scale JPEG decoding (`extract(..., jpeg_draft=True)`) against full decoding: speed,
how far the features move, and whether retrieval changes. One run, same model, same images.

The photo-variants set (18 photos x 10 variants) is re-saved with a long short side (default
1200 px, like phone photos scaled down), where reduced-scale decoding has work to save.

    python benchmarks/bench_jpeg_draft.py                       # EfficientNet-Lite0, short side 1200
    python benchmarks/bench_jpeg_draft.py --short-side 2400 --backbone auto
    python benchmarks/bench_jpeg_draft.py --n 20 --rounds 1        # a check that it runs

precision@1 (same source): the share of images whose nearest other image (cosine) is a variant
of the same photo.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from helpers.backbones import load_backbone  # noqa: E402
from helpers.datasets import build_photo_variants  # noqa: E402
from helpers.features import extract  # noqa: E402
from helpers.manifest import Manifest, scan  # noqa: E402


def nearest(x: np.ndarray) -> np.ndarray:
    """Each row's nearest other row by cosine."""
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    return sims.argmax(axis=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short-side", type=int, default=1200, help="short side the photos are re-saved at")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--rounds", type=int, default=2, help="timed extractions of each kind, interleaved")
    ap.add_argument("--n", type=int, help="only the first N images (default: all 180)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_jpeg_draft_") as tmp:
        folder = build_photo_variants(Path(tmp) / "variants")
        for path in folder.rglob("*.jpg"):
            with Image.open(path) as img:
                img = img.convert("RGB")
            s = args.short_side / min(img.size)
            img.resize((round(img.width * s), round(img.height * s)), Image.Resampling.BICUBIC).save(path, quality=90)
        manifest = scan(folder, progress=False).manifest
        manifest = Manifest(manifest.root, list(manifest)[:args.n])
        labels = np.array([e.label for e in manifest])
        backbone = load_backbone(args.backbone, verbose=False)
        extract(manifest, backbone, progress=False)   # warm-up: first-call allocations, file cache
        seconds, vectors = {False: 0.0, True: 0.0}, {}
        for _ in range(args.rounds):
            for draft in (False, True):
                start = time.perf_counter()
                fs = extract(manifest, backbone, jpeg_draft=draft, normalize=True, progress=False)
                seconds[draft] += time.perf_counter() - start
                vectors[draft] = fs.vectors
        full, draft = vectors[False], vectors[True]
        cos = (full * draft).sum(axis=1)
        precision = {k: float(np.mean(labels[nearest(v)] == labels)) for k, v in vectors.items()}
        print(f"{len(manifest)} JPEGs, short side {args.short_side}, backbone {backbone.name}; "
              f"draft: {fs.meta['decode']}")
        print(f"full decoding  {len(manifest) * args.rounds / seconds[False]:6.1f} images/s")
        print(f"draft decoding {len(manifest) * args.rounds / seconds[True]:6.1f} images/s: "
              f"{seconds[False] / seconds[True]:.2f}x")
        print(f"cosine draft vs full: min {cos.min():.4f}, mean {cos.mean():.5f}; nearest neighbour unchanged "
              f"for {np.mean(nearest(full) == nearest(draft)):.1%}; precision@1 same source: full {precision[False]:.3f}, "
              f"draft {precision[True]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
