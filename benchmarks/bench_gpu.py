"""What a GPU buys, each goal a ratio measured side by side in one run on the same machine:

1. exact search, 1,000 queries on 1,000,000 x 2048 float32 vectors (8 GB, cosine: unit vectors,
   inner product): on the GPU (Faiss's GpuIndexFlatIP on a Faiss GPU build, else torch's matrix
   product + topk in chunks, `helpers.gpu.torch_knn`) against Faiss's IndexFlatIP on every CPU
   core, on its BLAS path; recall@10 of the GPU's answer against the CPU's.
2. IVF on the GPU at recall@10 >= 0.95 against the GPU's exact search (Faiss GPU build only).
3. feature extraction (`helpers.features.extract`, random ResNet50: the weights do not change
   the speed) end to end on the GPU (DataLoader workers on every core, pinned memory,
   non-blocking copies, channels_last) against the forward pass alone in the same configuration,
   and against extraction on every CPU core of the same machine (on a few hundred images, to keep
   the run short). Side by side: the previous configuration (decoder "pil", each worker with
   torch's default threads), "pil" with one thread a worker, the GPU default "tensor" and
   "nvjpeg" (skipped with the reason where it cannot run), the last two in fp32, fp16 and bf16;
   each with the cosine of its features to the GPU's "pil" fp32 features and to the CPU's.

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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import helpers  # noqa: E402,F401  (before faiss: it chooses Faiss's BLAS kernels, helpers/blas.py)
import faiss  # noqa: E402
from _goal import goal  # noqa: E402  (benchmarks/ is on the path: this script's folder)
from bench_features import write_jpegs  # noqa: E402
from helpers.backbones import load_backbone  # noqa: E402
from helpers.evaluate import median_seconds, recall_at_k  # noqa: E402
from helpers import decoding, features  # noqa: E402
from helpers.features import extract  # noqa: E402
from helpers.devices import cpu_cores  # noqa: E402
from helpers.gpu import gpu_status, torch_knn  # noqa: E402
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


def timed_extract(manifest: Manifest, bb, device: str, **kw) -> tuple[float, np.ndarray, dict]:
    """Images per second end to end, the unit vectors and the metadata of one extraction."""
    start = time.perf_counter()
    fs = extract(manifest, bb, device=device, progress=False, **kw)
    rate = len(manifest) / (time.perf_counter() - start)
    assert not fs.failures, fs.failures[:3]
    return rate, fs.vectors / np.linalg.norm(fs.vectors, axis=1, keepdims=True), fs.meta


def extraction_goals(args, manifest: Manifest, device: str) -> None:
    bb = load_backbone(args.backbone, verbose=False)
    precisions = ["fp32", "fp16", "bf16"] if device.startswith("cuda") else ["fp32", "bf16"]
    n = len(manifest)
    warm = Manifest(manifest.root, list(manifest)[: min(n, 256)])
    nvjpeg_problem = decoding.decoder_problem("nvjpeg", device)
    decoders = [d for d in decoding.DECODERS if d != "nvjpeg" or not nvjpeg_problem]
    for d in decoders:   # warm-up: kernels, workers, file cache, the decoder
        extract(warm, bb, device=device, decoder=d, progress=False)
    rows = {}   # (label, precision) -> (rate, unit vectors, meta)
    threads = features.WORKER_THREADS
    try:   # the previous configuration: each worker with torch's default threads
        features.WORKER_THREADS = 0
        rows["previous", "fp32"] = timed_extract(manifest, bb, device, decoder="pil")
    finally:
        features.WORKER_THREADS = threads
    rows["pil", "fp32"] = timed_extract(manifest, bb, device, decoder="pil")
    for d in decoders[1:]:
        for p in precisions:
            rows[d, p] = timed_extract(manifest, bb, device, decoder=d, precision=p)
    model = bb.model.to(device, memory_format=torch.channels_last)
    crop = max(bb.preprocessing["crop"])
    batch_size = rows["pil", "fp32"][2]["batch_size"]
    batch = torch.randn(batch_size, 3, crop, crop, device=device).contiguous(memory_format=torch.channels_last)
    forward = {p: forward_rate(model, batch, n, p, device) for p in precisions}
    model.to("cpu")

    few = Manifest(manifest.root, list(manifest)[: min(n, args.cpu_images)])
    extract(Manifest(few.root, list(few)[:8]), bb, device="cpu", progress=False)   # warm-up
    cpu_rate, cpu_vectors, cpu_meta = timed_extract(few, bb, "cpu")

    meta = rows["pil", "fp32"][2]
    print(f"extraction: {n:,} JPEGs 640x480, {args.backbone}, on {meta['device_name']}, batch {batch_size}; "
          f"forward only: " + ", ".join(f"{p} {forward[p]:,.0f}" for p in precisions) + " images/s", flush=True)
    if nvjpeg_problem:
        print(f"  nvjpeg: skipped, {nvjpeg_problem}", flush=True)
    reference = rows["pil", "fp32"][1]
    for (label, p), (rate, vectors, meta) in rows.items():
        what = {"previous": f"pil, torch's {torch.get_num_threads()} threads in each worker (before)",
                "pil": "pil, 1 torch thread a worker"}.get(label, label)
        if label == decoding.GPU_DECODER:
            what += " (the GPU default)"
        if meta["decoder"] != label.replace("previous", "pil"):
            what += f" [fell back to {meta['decoder']}: see the warning]"
        to_gpu_pil = (vectors * reference).sum(axis=1)
        to_cpu = (vectors[: len(few)] * cpu_vectors).sum(axis=1)
        print(f"  {what}, {p}, {meta['num_workers']} workers: end to end {rate:7,.0f} images/s "
              f"({rate / forward[p]:.2f} of forward); cosine to GPU pil fp32 min {to_gpu_pil.min():.5f}, "
              f"to the CPU's features min {to_cpu.min():.5f} mean {to_cpu.mean():.5f}", flush=True)
    print(f"  CPU, {torch.get_num_threads()} threads, batch {cpu_meta['batch_size']}, decoder "
          f"{cpu_meta['decoder']}, {cpu_meta['num_workers']} workers: {cpu_rate:,.1f} images/s on "
          f"{len(few)} images", flush=True)
    name = "extraction_gpu_fp32_end_to_end_vs_forward"
    goal(f"{name}_previous", rows["previous", "fp32"][0] / forward["fp32"], GOAL_END_TO_END)
    default = rows.get((decoding.GPU_DECODER, "fp32"), rows["pil", "fp32"])[0]
    goal(name, default / forward["fp32"], GOAL_END_TO_END)
    if ("nvjpeg", "fp32") in rows:
        goal(f"{name}_nvjpeg", rows["nvjpeg", "fp32"][0] / forward["fp32"], GOAL_END_TO_END)
    else:
        goal(f"{name}_nvjpeg", None, GOAL_END_TO_END, skipped=nvjpeg_problem)
    goal("extraction_gpu_fp32_vs_cpu_all_cores", default / cpu_rate, GOAL_VS_CPU)


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
