"""Which device torch computes on, and how many CPU cores this process may use (bottom layer).

`pick_device("auto")` prefers a CUDA GPU, then Apple's GPU (`mps`), then the CPU; `features`
extracts on it and `gpu.torch_knn` searches on it. Faiss's own GPU code is CUDA only
(`gpu.gpu_status` says what Faiss can use). `allow_two_openmp_runtimes` is the macOS rule that
lets faiss-cpu and torch run in one process.
"""

from __future__ import annotations

import os
import sys

DEVICE_KINDS = ("cpu", "cuda", "mps")
#: What a backbone computes in: float32, or autocast to bfloat16 (CPUs) or float16 (CUDA GPUs).
PRECISIONS = ("fp32", "bf16", "fp16")


def cpu_cores() -> int:
    """The cores this process may use (a cluster job's share, not the whole machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _mps_available(torch) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def pick_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when torch sees an NVIDIA GPU, else 'mps' on Apple silicon where torch
    offers it, else 'cpu'; a device asked for by name that torch cannot use raises ValueError."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if _mps_available(torch) else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in DEVICE_KINDS:
        raise ValueError(f"device {device!r}: use 'auto', {', '.join(repr(k) for k in DEVICE_KINDS)}")
    if (kind == "cuda" and not torch.cuda.is_available()) or (kind == "mps" and not _mps_available(torch)):
        raise ValueError(f"device {device!r}: torch cannot use it here; use 'auto' or 'cpu'")
    return device


def device_name(device: str) -> str:
    """The processor a device string stands for, as features.json records it."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return "Apple GPU (mps)" if device.startswith("mps") else "cpu"


def check_precision(precision: str, device: str = "cpu") -> str:
    """`precision` when it is one of PRECISIONS and runs on `device` (fp16: CUDA only), else ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and not device.startswith("cuda"):
        raise ValueError("precision 'fp16' is for GPUs; on the CPU use 'bf16' (or 'fp32')")
    return precision


def allow_two_openmp_runtimes(platform: str = sys.platform, env=os.environ) -> bool:
    """On macOS, set KMP_DUPLICATE_LIB_OK=TRUE unless set already; True when this call set it.

    faiss-cpu's and torch's macOS wheels each bundle an OpenMP runtime (libomp); with both loaded
    the second aborts the process ("OMP: Error #15") or Faiss crashes in a parallel search
    (github.com/faiss-wheels/faiss-wheels/issues/73, whose maintainer gives this variable as the
    workaround). It must be set before either library loads, so `import helpers` does it; Linux and
    Windows are left alone.
    """
    if platform != "darwin" or "KMP_DUPLICATE_LIB_OK" in env:
        return False
    env["KMP_DUPLICATE_LIB_OK"] = "TRUE"
    return True
