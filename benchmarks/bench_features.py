"""How fast are image features extracted? Three ways, same model, same threads, one run:

1. loop:    the seed-style loop, one image at a time (PIL open, transform, model, fp32);
            it uses the same model object as 2, so only the way of running it differs.
2. helpers: `helpers.features.extract` end to end (decode, batches, channels_last, precision).
3. forward: the model alone on pre-decoded tensors, in the same configuration as 2.

Every timing counts model loading (and anything else the method needs); only the decoding
for 3 is done beforehand, by definition. It writes its own JPEGs (640x480, random crops of
the photos scikit-image ships) into a temporary folder. Ends with one line per goal:
`goal: <name> measured <value> target <target> met|missed`.

    python benchmarks/bench_features.py                 # 1,000 images, random ResNet50
    python benchmarks/bench_features.py --n 100 --precision bf16
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from helpers.backbones import load_backbone  # noqa: E402
from helpers.features import BATCH_SIZE, extract, l2_normalize  # noqa: E402
from helpers.manifest import scan  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
GOAL_VS_LOOP, GOAL_VS_FORWARD = 1.8, 0.85


def write_jpegs(folder: Path, n: int, seed: int = 0) -> None:
    """n 640x480 JPEGs: random crops (30-100% of the side), random flips, of bundled photos."""
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in PHOTOS]
    for i in range(n):
        img = photos[i % len(photos)]
        f = rng.uniform(0.3, 1.0)
        w, h = int(img.width * f), int(img.height * f)
        x, y = rng.integers(0, img.width - w + 1), rng.integers(0, img.height - h + 1)
        out = img.crop((x, y, x + w, y + h)).resize((640, 480), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.save(folder / f"img_{i:05d}.jpg", quality=90)


def seed_loop(paths: list[Path], backbone_name: str) -> tuple[float, np.ndarray]:
    """The usual tutorial code: one image at a time."""
    start = time.perf_counter()
    bb = load_backbone(backbone_name, verbose=False)
    feats = []
    with torch.no_grad():
        for p in paths:
            x = bb.transform(Image.open(p).convert("RGB")).unsqueeze(0)
            feats.append(bb.model(x).numpy().ravel())
    return len(paths) / (time.perf_counter() - start), np.stack(feats)


def helpers_run(manifest, backbone_name: str, batch_size: int, precision: str,
                workers: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    bb = load_backbone(backbone_name, verbose=False)
    fs = extract(manifest, bb, batch_size=batch_size, precision=precision, num_workers=workers,
                 progress=False)
    assert not fs.failures, fs.failures[:3]
    return len(manifest) / (time.perf_counter() - start), fs.vectors


def forward_only(tensors: torch.Tensor, backbone_name: str, batch_size: int, precision: str) -> float:
    start = time.perf_counter()
    model = load_backbone(backbone_name, verbose=False).model.to(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for i in range(0, len(tensors), batch_size):
            model(tensors[i:i + batch_size].contiguous(memory_format=torch.channels_last)).float()
    return len(tensors) / (time.perf_counter() - start)


def goal(name: str, measured: float, target: float) -> str:
    return f"goal: {name} measured {measured:.2f} target {target} {'met' if measured >= target else 'missed'}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="number of JPEGs (default 1000)")
    ap.add_argument("--backbone", default="random_resnet50",
                    help="random_resnet50 (default: ResNet50's cost without its weights), resnet50, "
                         "efficientnet_lite0, auto")
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"default: helpers' own, {BATCH_SIZE}")
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                    help="helpers/forward configurations to measure (default: both)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers for helpers")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        folder = Path(tmp)
        write_jpegs(folder, args.n)
        manifest = scan(folder, progress=False).manifest
        paths = [manifest.abspath(e) for e in manifest]
        tf = load_backbone(args.backbone, verbose=False).transform
        tensors = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])
        print(f"{args.n} JPEGs 640x480, backbone {args.backbone}, {args.threads} threads, batch "
              f"{args.batch_size}, workers {args.workers}, torch {torch.__version__}")

        loop_rate, loop_feats = seed_loop(paths, args.backbone)
        print(f"loop, per image (fp32):   {loop_rate:6.1f} images/s")
        goals = []
        for precision in args.precision:
            rate, feats = helpers_run(manifest, args.backbone, args.batch_size, precision, args.workers)
            fwd = forward_only(tensors, args.backbone, args.batch_size, precision)
            cos = (l2_normalize(feats) * l2_normalize(loop_feats)).sum(axis=1)
            print(f"helpers, end to end ({precision}): {rate:6.1f} images/s ({rate / loop_rate:.2f}x the "
                  f"loop; cosine to the loop's features: min {cos.min():.5f})")
            print(f"forward only ({precision}):        {fwd:6.1f} images/s "
                  f"(helpers reach {rate / fwd:.2f} of it)")
            goals += [goal(f"helpers_{precision}_vs_loop", rate / loop_rate, GOAL_VS_LOOP),
                      goal(f"helpers_{precision}_vs_forward", rate / fwd, GOAL_VS_FORWARD)]
        print("\n".join(goals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
