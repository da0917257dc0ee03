"""What a GPU buys, each goal a ratio measured side by side in one run on the same machine:

1. exact search, 1,000 queries on 1,000,000 x 2048 float32 vectors (8 GB, cosine: unit vectors,
   inner product): on the GPU (Faiss's GpuIndexFlatIP on a Faiss GPU build, else torch's matrix
   product + topk in chunks, `helpers.gpu.torch_knn`) against Faiss's IndexFlatIP on every CPU
   core, on its BLAS path; recall@10 of the GPU's answer against the CPU's.
2. IVF on the GPU at recall@10 >= 0.95 against the GPU's exact search (Faiss GPU build only).
3. feature extraction (`helpers.features.extract`, random ResNet50: the weights do not change
   the speed) end to end on the GPU (DataLoader workers on every core decoding JPEGs, pinned
   memory, non-blocking copies, channels_last) against the forward pass alone in the same
   configuration, and against extraction on every CPU core of the same machine (on a few hundred
   images, to keep the run short); fp16 and bf16 autocast measured against fp32 (speed, cosine).

The vectors are generated on the GPU with torch: clusters (so that IVF has structure to use),
queries drawn from the same clusters. The JPEGs (640x480) come from bench_features.write_jpegs.
Without a GPU it prints one line saying so and exits 0. `--cpu-rehearsal` runs every step on
the CPU at tiny sizes, to check the script itself (its figures mean nothing).

    python benchmarks/bench_gpu.py
    python benchmarks/bench_gpu.py --n 200000 --images 2048
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import faiss
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _goal import goal  # noqa: E402  (benchmarks/ is on the path: this script's folder)
from bench_features import write_jpegs  # noqa: E402
from helpers.backbones import load_backbone  # noqa: E402
from helpers.evaluate import median_seconds, recall_at_k  # noqa: E402
from helpers.features import extract  # noqa: E402
from helpers.gpu import cpu_cores, gpu_status, torch_knn  # noqa: E402
from helpers.indexes import blas_threshold  # noqa: E402
from helpers.manifest import Manifest, scan  # noqa: E402

GOAL_SEARCH, GOAL_RECALL, GOAL_IVF, IVF_RECALL = 20, 0.99, 5, 0.95
GOAL_END_TO_END, GOAL_VS_CPU = 0.7, 20


def jpegs(folder: Path, n: int, workers: int) -> Manifest:
    """n JPEGs written by `workers` processes (one sub-folder and seed each), scanned."""
    counts = [len(part) for part in np.array_split(np.arange(n), workers) if len(part)]
    dirs = [folder / f"part{i:02d}" for i in range(len(counts))]
    for d in dirs:
        d.mkdir()
    with ProcessPoolExecutor(len(counts)) as pool:
        list(pool.map(write_jpegs, dirs, counts, range(len(counts))))
    return scan(folder, progress=False).manifest


def clustered(n: int, d: int, centers: torch.Tensor, seed: int, chunk: int = 65_536) -> torch.Tensor:
    """n unit vectors, each a random center plus noise, generated on the centers' device."""
    g = torch.Generator(device=centers.device).manual_seed(seed)
    out = torch.empty(n, d, device=centers.device)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        pick = torch.randint(len(centers), (m,), device=centers.device, generator=g)
        x = centers[pick] + 0.7 * torch.randn(m, d, device=centers.device, generator=g)
        out[s:s + m] = x / x.norm(dim=1, keepdim=True)
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def search_goals(args, status, device: str) -> None:
    k, n, d, nq = args.k, args.n, args.d, args.queries
    g = torch.Generator(device=device).manual_seed(0)
    centers = torch.randn(max(1, n // 50), d, device=device, generator=g)
    start = time.perf_counter()
    xb = clustered(n, d, centers, 1)
    xq = clustered(nq, d, centers, 2)
    xb_host, xq_host = xb.cpu().numpy(), xq.cpu().numpy()
    print(f"exact search: {nq:,} queries on {n:,} x {d} float32 ({xb_host.nbytes / 1e9:.1f} GB, unit "
          f"vectors, inner product), k={k}; made on {device} and copied to the host in "
          f"{time.perf_counter() - start:.1f} s", flush=True)

    cpu_flat = faiss.IndexFlatIP(d)
    cpu_flat.add(xb_host)
    faiss.omp_set_num_threads(cpu_cores())
    with blas_threshold(0):   # Faiss's BLAS path: exact search at its best on the CPU
        _, truth = cpu_flat.search(xq_host, k)   # the answer, and a warm-up
        cpu_s = median_seconds(lambda: cpu_flat.search(xq_host, k), args.cpu_repeats)
    print(f"  Faiss IndexFlatIP, CPU, {faiss.omp_get_max_threads()} threads (BLAS path): "
          f"{nq / cpu_s:,.0f} queries/s", flush=True)

    torch_knn(xb, xq, k, "ip", device)   # warm-up: kernels, allocator
    torch_s = median_seconds(lambda: torch_knn(xb, xq, k, "ip", device), args.repeats)
    _, torch_ids = torch_knn(xb, xq, k, "ip", device)
    print(f"  torch matmul + topk on {device}: {nq / torch_s:,.0f} queries/s, "
          f"{cpu_s / torch_s:.1f}x Faiss CPU, recall@{k} {recall_at_k(torch_ids, truth, k):.4f}", flush=True)
    gpu_s, gpu_ids, what = torch_s, torch_ids, "torch"
    del xb, xq, centers
    if status.route == "faiss-gpu":
        res = faiss.StandardGpuResources()
        gpu_flat = faiss.index_cpu_to_gpu(res, 0, cpu_flat)
        gpu_flat.search(xq_host, k)   # warm-up
        gpu_s = median_seconds(lambda: gpu_flat.search(xq_host, k), args.repeats)
        _, gpu_ids = gpu_flat.search(xq_host, k)
        what = "Faiss GpuIndexFlatIP"
        print(f"  {what}: {nq / gpu_s:,.0f} queries/s, {cpu_s / gpu_s:.1f}x Faiss CPU", flush=True)
        del gpu_flat
    recall = recall_at_k(gpu_ids, truth, k)
    print(f"  on the GPU: {what}")
    goal("exact_search_gpu_vs_faiss_cpu_flat", cpu_s / gpu_s, GOAL_SEARCH)
    goal(f"exact_search_gpu_recall@{k}_vs_faiss_cpu_flat", recall, GOAL_RECALL, unit="")
    if status.route != "faiss-gpu":
        goal(f"ivf_gpu_vs_gpu_exact_at_recall{IVF_RECALL}", None, GOAL_IVF,
             skipped="no Faiss GPU build" if not status.faiss_gpu_build else status.why_no_faiss_gpu())
        return
    ivf_goal(args, xb_host, xq_host, truth, gpu_s)


def ivf_goal(args, xb_host: np.ndarray, xq_host: np.ndarray, truth: np.ndarray, exact_s: float) -> None:
    """IVF,Flat trained and searched on the GPU: the smallest nprobe reaching the recall, timed."""
    k, (n, d) = args.k, xb_host.shape
    nlist = args.nlist
    res = faiss.StandardGpuResources()
    index = faiss.index_cpu_to_gpu(res, 0, faiss.index_factory(d, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT))
    sample = np.sort(np.random.default_rng(0).choice(n, min(n, 39 * nlist), replace=False))
    start = time.perf_counter()
    index.train(xb_host[sample])
    index.add(xb_host)
    print(f"  IVF{nlist},Flat on the GPU: trained and added in {time.perf_counter() - start:.1f} s", flush=True)
    params = faiss.GpuParameterSpace()
    for nprobe in [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048) if p <= nlist]:
        params.set_index_parameter(index, "nprobe", nprobe)
        recall = recall_at_k(index.search(xq_host, k)[1], truth, k)
        if recall >= IVF_RECALL:
            ivf_s = median_seconds(lambda: index.search(xq_host, k), args.repeats)
            print(f"  nprobe {nprobe}: recall@{k} {recall:.4f}, {len(xq_host) / ivf_s:,.0f} queries/s", flush=True)
            goal(f"ivf_gpu_vs_gpu_exact_at_recall{IVF_RECALL}", exact_s / ivf_s, GOAL_IVF)
            return
    goal(f"ivf_gpu_vs_gpu_exact_at_recall{IVF_RECALL}", None, GOAL_IVF,
         skipped=f"recall {recall:.3f} < {IVF_RECALL} even at nprobe {nprobe}")


def forward_rate(model, batch: torch.Tensor, n: int, precision: str, device: str) -> float:
    """Images per second of the forward pass alone, on one batch already on the device."""
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    steps = max(1, n // len(batch))
    with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=half, enabled=half is not None):
        model(batch).float()   # warm-up
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            model(batch).float()
        sync(device)
    return steps * len(batch) / (time.perf_counter() - start)


def extraction_goals(args, manifest: Manifest, device: str) -> None:
    bb = load_backbone(args.backbone, verbose=False)
    precisions = ["fp32", "fp16", "bf16"] if device.startswith("cuda") else ["fp32", "bf16"]
    n = len(manifest)
    warm = Manifest(manifest.root, list(manifest)[: min(n, 256)])
    extract(warm, bb, device=device, progress=False)   # warm-up: kernels, workers, file cache
    rates, feats = {}, {}
    for p in precisions:
        start = time.perf_counter()
        fs = extract(manifest, bb, device=device, precision=p, progress=False)
        rates[p] = n / (time.perf_counter() - start)
        assert not fs.failures, fs.failures[:3]
        feats[p] = fs.vectors / np.linalg.norm(fs.vectors, axis=1, keepdims=True)
    meta = fs.meta
    model = bb.model.to(device, memory_format=torch.channels_last)
    crop = max(bb.preprocessing["crop"])
    batch = torch.randn(meta["batch_size"], 3, crop, crop, device=device).contiguous(memory_format=torch.channels_last)
    forward = {p: forward_rate(model, batch, n, p, device) for p in precisions}
    model.to("cpu")
    print(f"extraction: {n:,} JPEGs 640x480, {args.backbone}, on {meta['device_name']}, batch "
          f"{meta['batch_size']}, {meta['num_workers']} DataLoader workers", flush=True)
    for p in precisions:
        cos = (feats[p] * feats["fp32"]).sum(axis=1)
        print(f"  {p}: end to end {rates[p]:7,.0f} images/s, forward only {forward[p]:7,.0f} images/s "
              f"({rates[p] / forward[p]:.2f} of it), {rates[p] / rates['fp32']:.2f}x fp32, cosine to fp32 "
              f"min {cos.min():.5f} mean {cos.mean():.5f}", flush=True)

    few = Manifest(manifest.root, list(manifest)[: min(n, args.cpu_images)])
    extract(Manifest(few.root, list(few)[:8]), bb, device="cpu", progress=False)   # warm-up
    start = time.perf_counter()
    cpu_fs = extract(few, bb, device="cpu", progress=False)
    cpu_rate = len(few) / (time.perf_counter() - start)
    cpu_vs_gpu = (feats["fp32"][: len(few)] * cpu_fs.vectors
                  / np.linalg.norm(cpu_fs.vectors, axis=1, keepdims=True)).sum(axis=1)
    print(f"  CPU, {torch.get_num_threads()} threads, batch {cpu_fs.meta['batch_size']}, "
          f"{cpu_fs.meta['num_workers']} workers: {cpu_rate:,.1f} images/s on {len(few)} images; cosine of "
          f"the GPU's fp32 features to the CPU's min {cpu_vs_gpu.min():.5f}", flush=True)
    goal("extraction_gpu_fp32_end_to_end_vs_forward", rates["fp32"] / forward["fp32"], GOAL_END_TO_END)
    goal("extraction_gpu_fp32_vs_cpu_all_cores", rates["fp32"] / cpu_rate, GOAL_VS_CPU)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="database vectors (default 1,000,000)")
    ap.add_argument("--d", type=int, default=2048, help="dimension (default 2048)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nlist", type=int, default=4096, help="IVF lists (Faiss GPU build only)")
    ap.add_argument("--images", type=int, default=4096, help="JPEGs extracted on the GPU (default 4,096)")
    ap.add_argument("--cpu-images", type=int, default=256, help="of those, extracted on the CPU (default 256)")
    ap.add_argument("--backbone", default="random_resnet50")
    ap.add_argument("--repeats", type=int, default=3, help="timings per GPU measurement (median)")
    ap.add_argument("--cpu-repeats", type=int, default=2, help="timings of Faiss's CPU search (median)")
    ap.add_argument("--skip", choices=["search", "extraction"], action="append", default=[])
    ap.add_argument("--cpu-rehearsal", action="store_true",
                    help="run every step on the CPU at tiny sizes (checks the script; figures mean nothing)")
    args = ap.parse_args(argv)
    status = gpu_status()
    if not status.torch_cuda and not args.cpu_rehearsal:
        print(f"bench_gpu: no GPU here (torch {status.torch_version} sees no CUDA device), nothing to "
              f"measure; run it on a machine with an NVIDIA GPU")
        return 0
    device = "cuda" if status.torch_cuda and not args.cpu_rehearsal else "cpu"
    if args.cpu_rehearsal:
        args.n, args.d, args.queries, args.images, args.cpu_images, args.repeats, args.cpu_repeats = (
            20_000, 256, 100, 24, 8, 1, 1)
    print(f"bench_gpu on {', '.join(map(str, status.cuda_devices)) or 'the CPU (rehearsal)'}; "
          f"{status.cpu_cores} CPU cores; torch {status.torch_version}; faiss {status.faiss_version} "
          f"({'GPU' if status.faiss_gpu_build else 'CPU'} build)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        # JPEGs first, before CUDA is busy: the writer processes are forked from this one
        manifest = None if "extraction" in args.skip else jpegs(Path(tmp), args.images, status.cpu_cores)
        if "search" not in args.skip:
            search_goals(args, status, device)
        if manifest is not None:
            extraction_goals(args, manifest, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
