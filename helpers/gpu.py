"""What this machine has for the GPU (a Faiss GPU build, CUDA devices seen by torch), what each
step of notebook 07_gpu will therefore do, and exact search in torch for where Faiss has no GPU build.

Taught in notebook 07_gpu (00 prints the status). Faiss's pip wheel `faiss-cpu` has no GPU code;
`faiss-gpu` (or conda's faiss-gpu) installs the same `faiss` module with it: never both.
"""

from __future__ import annotations

from dataclasses import dataclass

from .devices import cpu_cores, pick_device
from .indexes import faiss_metric

import numpy as np

#: torch's exact search compares the queries with this many database rows at a time, so the
#: (queries x rows) score block stays small (1,000 queries: 1 GB of float32).
TORCH_KNN_CHUNK = 262_144
#: Faiss's GPU search limit with its own kernels, for k and for nprobe alike (Faiss 1.15,
#: GPU_MAX_SELECTION_K in faiss/gpu/utils/DeviceDefs.cuh; 16,384 when the cuVS backend searches).
GPU_MAX_K = 2048


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str
    memory_gb: float

    def __str__(self) -> str:
        return f"cuda:{self.index} {self.name} ({self.memory_gb:.0f} GB)"


@dataclass(frozen=True)
class GpuStatus:
    """What Faiss and torch can use here; `route` is what notebook 07_gpu does with it."""

    faiss_version: str
    faiss_gpu_build: bool         # "GPU" in faiss.get_compile_options()
    faiss_gpus: int               # faiss.get_num_gpus(): 0 on the CPU build
    torch_version: str
    cuda_devices: tuple[CudaDevice, ...]
    cpu_cores: int

    @property
    def torch_cuda(self) -> bool:
        return bool(self.cuda_devices)

    @property
    def route(self) -> str:
        """'faiss-gpu' (Faiss moves indexes to the GPU), 'torch' (exact search in torch on the GPU:
        Faiss is the CPU build) or 'cpu' (no GPU: the GPU steps say what they would do)."""
        if self.faiss_gpu_build and self.faiss_gpus:
            return "faiss-gpu"
        return "torch" if self.torch_cuda else "cpu"

    def why_no_faiss_gpu(self) -> str:
        """Why the Faiss GPU cells are skipped here ('' when they run)."""
        if self.route == "faiss-gpu":
            return ""
        if not self.faiss_gpu_build:
            return f"this Faiss {self.faiss_version} is the CPU build (faiss-cpu)"
        return "this Faiss has GPU code but sees no GPU (faiss.get_num_gpus() is 0)"

    def describe(self) -> str:
        """The machine, then what each step of notebook 07_gpu will do on it."""
        from .features import BATCH_SIZE, GPU_BATCH_SIZE

        devices = ", ".join(map(str, self.cuda_devices)) or "none"
        build = "GPU build" if self.faiss_gpu_build else "CPU build (faiss-cpu)"
        lines = [f"faiss {self.faiss_version}: {build}, sees {self.faiss_gpus} GPU(s)",
                 f"torch {self.torch_version}: CUDA devices {devices}",
                 f"CPU cores: {self.cpu_cores}", "Notebook 07_gpu on this machine:"]
        if self.torch_cuda:
            lines.append(f"  features: on {self.cuda_devices[0]}, batches of {GPU_BATCH_SIZE}, "
                         f"{self.cpu_cores} DataLoader workers decoding, pinned memory")
        else:
            lines.append(f"  features: on the CPU (batches of {BATCH_SIZE}, decoded in the main process)")
        if self.route == "faiss-gpu":
            lines.append(f"  Faiss on the GPU: runs (indexes moved to {self.faiss_gpus} GPU(s), timed against the CPU)")
        else:
            lines.append(f"  Faiss on the GPU: skipped, {self.why_no_faiss_gpu()}"
                         + ("; faiss-gpu has them (README: GPU)" if not self.faiss_gpu_build else ""))
        where = "the GPU" if self.torch_cuda else "the CPU (no GPU: the same code, checked, not faster)"
        lines.append(f"  exact search in torch: on {where}, checked against Faiss's Flat and timed")
        return "\n".join(lines)


def gpu_status() -> GpuStatus:
    """Detect what Faiss and torch can use on this machine."""
    import faiss
    import torch

    devices = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            devices.append(CudaDevice(i, p.name, p.total_memory / 1e9))
    gpu_build = "GPU" in faiss.get_compile_options().split()
    return GpuStatus(faiss_version=faiss.__version__, faiss_gpu_build=gpu_build,
                     faiss_gpus=faiss.get_num_gpus() if gpu_build else 0,
                     torch_version=torch.__version__, cuda_devices=tuple(devices), cpu_cores=cpu_cores())


def torch_knn(xb, xq, k: int, metric: str = "cosine", device: str = "auto",
              chunk: int = TORCH_KNN_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-nearest-neighbour search in torch: (scores, ids) as Faiss's `search` returns them.

    For each block of `chunk` database rows: one matrix product with all queries, then `topk`,
    merged with the best k so far. metric 'cosine' normalises both sides (per block) and ranks by
    inner product, 'ip' by inner product as given (larger is nearer), 'l2' by squared distance
    (smaller is nearer). xb, xq: numpy arrays or torch tensors; rows already on `device` are not
    copied. Ties may come back in another order than Faiss's. Taught in notebook 07_gpu.
    """
    import torch
    import torch.nn.functional as F

    faiss_metric(metric)   # ValueError naming the metrics for any other
    dev = torch.device(pick_device(device))
    xb, xq = (torch.as_tensor(x) for x in (xb, xq))
    if xb.ndim != 2 or xq.ndim != 2 or xb.shape[1] != xq.shape[1]:
        raise ValueError(f"database {tuple(xb.shape)} and queries {tuple(xq.shape)} must be 2-d with the same d")
    if not 1 <= k <= len(xb):
        raise ValueError(f"k={k}: need 1 <= k <= {len(xb)} (the database size)")
    if chunk < 1:
        raise ValueError(f"chunk={chunk}: must be positive")
    q = xq.to(dev, torch.float32)
    if metric == "cosine":
        q = F.normalize(q, dim=1)
    largest = metric != "l2"
    best_s = torch.empty(len(q), 0, device=dev)
    best_i = torch.empty(len(q), 0, dtype=torch.int64, device=dev)
    with torch.inference_mode():
        for start in range(0, len(xb), chunk):
            block = xb[start:start + chunk].to(dev, torch.float32, non_blocking=True)
            if metric == "cosine":
                block = F.normalize(block, dim=1)
            s = q @ block.T
            if metric == "l2":   # ||q - x||^2 = ||q||^2 + ||x||^2 - 2 q.x, as Faiss's BLAS path
                s = (q * q).sum(1, keepdim=True) + (block * block).sum(1)[None, :] - 2 * s
            top_s, top_i = s.topk(min(k, s.shape[1]), dim=1, largest=largest)
            best_s, pos = torch.cat([best_s, top_s], 1).topk(min(k, best_s.shape[1] + top_s.shape[1]),
                                                               dim=1, largest=largest)
            best_i = torch.cat([best_i, top_i + start], 1).gather(1, pos)
    return best_s.cpu().numpy(), best_i.cpu().numpy()
