"""How fast are image features extracted? Three ways, same model, same threads, one run:

1. loop:    the seed-style loop, one image at a time (PIL open, transform, model, fp32), with
            the network as torchvision builds it (BatchNorm layers kept).
2. helpers: `helpers.features.extract` end to end (decode, batches, channels_last, precision).
3. forward: the model alone on pre-decoded tensors, in the same configuration as 2.

Each method loads its own copy of the same network and weights (`load_backbone`; 2 and 3 with
BatchNorms folded into the convolutions) and that time is counted. Only the decoding for 3
is done beforehand, by definition. The methods take turns on chunks of the images (`--rounds`),
so a machine shared with other work slows them alike and the ratios stay fair; each line says
how much of the CPUs other processes used meanwhile.

It writes its own JPEGs (640x480, random crops of photos scikit-image ships) into a temporary
folder, and ends with one goal line per goal (benchmarks/_goal.py).

    python benchmarks/bench_features.py                 # 1,000 images, random ResNet50
    python benchmarks/bench_features.py --n 100 --precision bf16
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._goal import goal  # noqa: E402
from helpers.backbones import load_backbone  # noqa: E402
from helpers.indexes import normalize  # noqa: E402
from helpers.features import BATCH_SIZE, extract  # noqa: E402
from helpers.manifest import Manifest, scan  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
GOAL_VS_LOOP, GOAL_VS_FORWARD = 1.8, 0.85


def write_jpegs(folder: Path, n: int, seed: int = 0) -> None:
    """n 640x480 JPEGs in `folder` (made if missing): random crops (30-100% of the side), random
    flips, of bundled photos."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)

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


class Clock:
    """Wall time of the calls it times, and the CPU time other processes took meanwhile."""

    def __init__(self):
        self.wall = self.others = 0.0

    @staticmethod
    def _machine_busy() -> float:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:9]]
        except OSError:
            return float("nan")  # not Linux: the share is unknown
        return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
                   for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))

    def time(self, fn, *args, **kw):
        busy, own, start = self._machine_busy(), self._own(), time.perf_counter()
        result = fn(*args, **kw)
        self.wall += time.perf_counter() - start
        self.others += max(0.0, (self._machine_busy() - busy) - (self._own() - own))
        return result

    def rate(self, n: int) -> float:
        return n / self.wall

    def note(self) -> str:
        return f"[others used {self.others / (self.wall * os.cpu_count()):.0%} of the CPUs meanwhile]"


def loop_chunk(bb, paths) -> list[np.ndarray]:
    """The usual tutorial code: one image at a time."""
    feats = []
    with torch.no_grad():
        for p in paths:
            x = bb.transform(Image.open(p).convert("RGB")).unsqueeze(0)
            feats.append(bb.model(x).numpy().ravel())
    return feats


def forward_chunk(model, tensors, batch_size: int, precision: str) -> None:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for i in range(0, len(tensors), batch_size):
            model(tensors[i:i + batch_size].contiguous(memory_format=torch.channels_last)).float()


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
    ap.add_argument("--rounds", type=int, default=10, help="chunks the methods take turns on")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        write_jpegs(Path(tmp), args.n)
        manifest = scan(tmp, progress=False).manifest
        paths = [manifest.abspath(e) for e in manifest]
        tf = load_backbone(args.backbone, verbose=False).transform
        tensors = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])
        print(f"{args.n} JPEGs 640x480, backbone {args.backbone}, {args.threads} threads, batch "
              f"{args.batch_size}, workers {args.workers}, {args.rounds} rounds, torch {torch.__version__}")

        clocks = {"loop": Clock()}
        models = {"loop": clocks["loop"].time(load_backbone, args.backbone, verbose=False, fold_bn=False)}
        for p in args.precision:
            clocks[f"helpers_{p}"], clocks[f"forward_{p}"] = Clock(), Clock()
            models[f"helpers_{p}"] = clocks[f"helpers_{p}"].time(load_backbone, args.backbone, verbose=False)
            models[f"forward_{p}"] = clocks[f"forward_{p}"].time(
                lambda: load_backbone(args.backbone, verbose=False).model.to(memory_format=torch.channels_last))
        feats = {name: [] for name in clocks if not name.startswith("forward")}
        for chunk in np.array_split(np.arange(len(manifest)), args.rounds):
            feats["loop"] += clocks["loop"].time(loop_chunk, models["loop"], [paths[i] for i in chunk])
            part = Manifest(manifest.root, [manifest[i] for i in chunk])
            for p in args.precision:
                fs = clocks[f"helpers_{p}"].time(lambda: extract(
                    part, models[f"helpers_{p}"], batch_size=args.batch_size, precision=p,
                    num_workers=args.workers, progress=False))
                assert not fs.failures, fs.failures[:3]
                feats[f"helpers_{p}"].append(fs.vectors)
                clocks[f"forward_{p}"].time(forward_chunk, models[f"forward_{p}"], tensors[chunk],
                                            args.batch_size, p)

        loop_rate = clocks["loop"].rate(args.n)
        print(f"loop, per image (fp32):        {loop_rate:6.1f} images/s {clocks['loop'].note()}")
        goals = []   # (name, measured, target), printed together at the end
        for p in args.precision:
            rate, fwd = clocks[f"helpers_{p}"].rate(args.n), clocks[f"forward_{p}"].rate(args.n)
            cos = (normalize(np.concatenate(feats[f"helpers_{p}"]))
                   * normalize(np.stack(feats["loop"]))).sum(axis=1)
            print(f"helpers, end to end ({p}):   {rate:6.1f} images/s {clocks[f'helpers_{p}'].note()}: "
                  f"{rate / loop_rate:.2f}x the loop, cosine to its features min {cos.min():.5f}")
            print(f"forward only ({p}):          {fwd:6.1f} images/s {clocks[f'forward_{p}'].note()}: "
                  f"helpers reach {rate / fwd:.2f} of it")
            goals += [(f"helpers_{p}_vs_loop", rate / loop_rate, GOAL_VS_LOOP),
                      (f"helpers_{p}_vs_forward", rate / fwd, GOAL_VS_FORWARD)]
        for name, measured, target in goals:
            goal(name, measured, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
