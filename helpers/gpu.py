"""Whether Faiss and torch can see a GPU, said plainly."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuStatus:
    torch_cuda: bool
    torch_device: str | None
    faiss_gpus: int
    faiss_build: str

    def describe(self) -> str:
        torch_part = (f"torch sees a GPU ({self.torch_device})" if self.torch_cuda
                      else "torch sees no GPU: features are computed on the CPU")
        if self.faiss_gpus:
            faiss_part = f"Faiss sees {self.faiss_gpus} GPU(s)"
        elif self.faiss_build == "cpu":
            faiss_part = "this Faiss is the CPU build (faiss-cpu): indexes stay on the CPU"
        else:
            faiss_part = "Faiss has GPU support but sees no GPU"
        return f"{torch_part}; {faiss_part}."


def gpu_status() -> GpuStatus:
    import faiss
    import torch

    cuda = torch.cuda.is_available()
    has_gpu_api = hasattr(faiss, "StandardGpuResources")
    return GpuStatus(
        torch_cuda=cuda,
        torch_device=torch.cuda.get_device_name(0) if cuda else None,
        faiss_gpus=faiss.get_num_gpus() if has_gpu_api else 0,
        faiss_build="gpu" if has_gpu_api else "cpu",
    )
