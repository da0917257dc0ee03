"""Which BLAS kernels Faiss runs, and choosing them for this CPU (importing `helpers` does it).

faiss-cpu's Linux wheels bundle their own OpenBLAS (0.3.15 in faiss-cpu 1.15.1), which picks its
kernels from the CPU's model number when it loads and falls back to its oldest x86-64 kernels,
"Prescott" (SSE3), for a model it does not know: CPUs newer than it, and virtual machines that
hide the model: exact search and k-means then run several times slower than the same library
with the right kernels (`benchmarks/bench_blas.py` measures it side by side; the README has the
figures). OpenBLAS reads the environment variable
OPENBLAS_CORETYPE when it loads, so the choice has to be made before `import faiss`:

- `choose_kernels()` sets OPENBLAS_CORETYPE from the CPU's instruction sets (SkylakeX for
  AVX-512, Haswell for AVX2 + FMA) unless it is set already; `import helpers` calls it, so the
  course's commands, its notebook runner and the tests, and every process they start (notebook
  kernels, `make lab`'s Jupyter), load Faiss with it; each notebook imports `helpers` before
  `faiss` for the same reason. The variable is process-wide: any other OpenBLAS loaded later in
  the process (numpy's, scipy's) and every child process get it too.
- `faiss_kernels()` names the kernels Faiss's OpenBLAS runs (`openblas_get_corename`), or None
  where Faiss does not bundle OpenBLAS (macOS and Windows wheels use other BLAS libraries).
- `check()`: a warning when Faiss was imported before `helpers` with weaker kernels than chosen
  (a notebook's `import faiss` in a kernel started without them): restart it from `make lab`.
"""

from __future__ import annotations

import ctypes
import os
import sys
import warnings
from pathlib import Path

VARIABLE = "OPENBLAS_CORETYPE"
#: OpenBLAS kernel sets, best first, with the instruction sets each needs (as /proc/cpuinfo names them)
KERNELS = (("SkylakeX", frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "fma"})),
           ("Haswell", frozenset({"avx2", "fma"})))


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The instruction sets of this CPU, as the kernel reports them (empty where it cannot be read)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def kernels_for(flags) -> str | None:
    """The best OpenBLAS kernel set these instruction sets run, or None (leave OpenBLAS to choose)."""
    return next((name for name, needs in KERNELS if needs <= set(flags)), None)


#: what `choose_kernels` set in this process's environment; None when it set nothing (the variable
#: came with the environment, or this CPU needs none)
chosen_here: str | None = None


def choose_kernels(environ=os.environ) -> str | None:
    """Set OPENBLAS_CORETYPE for this CPU unless already set; returns the value in force, or None."""
    global chosen_here
    if not environ.get(VARIABLE):
        chosen = kernels_for(cpu_flags()) if sys.platform.startswith("linux") else None
        if chosen:
            environ[VARIABLE] = chosen
            if environ is os.environ:
                chosen_here = chosen
    return environ.get(VARIABLE) or None


def _faiss_openblas() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("faiss")
    if spec is None or not spec.origin:
        return None
    libs = Path(spec.origin).parent.parent / "faiss_cpu.libs"
    return next(iter(sorted(libs.glob("libopenblas*.so*"))), None)


def faiss_kernels() -> str | None:
    """The kernel set Faiss's bundled OpenBLAS runs (loading it when Faiss is not imported yet,
    with the environment as it is now), or None where Faiss bundles no OpenBLAS."""
    path = _faiss_openblas()
    if path is None:
        return None
    library = ctypes.CDLL(str(path))   # the library already loaded by faiss, when it is
    try:
        get = library.openblas_get_corename
    except AttributeError:
        return None
    get.restype = ctypes.c_char_p
    return get().decode()


def check() -> None:
    """Warn when Faiss is already loaded with other kernels than OPENBLAS_CORETYPE names."""
    wanted = os.environ.get(VARIABLE)
    if "faiss" not in sys.modules or not wanted:
        return
    running = faiss_kernels()
    if running and running.lower() != wanted.lower():
        warnings.warn(f"Faiss was imported before `helpers` and its OpenBLAS runs {running} kernels on a CPU "
                      f"that runs {wanted}: exact search and k-means run several times slower than they can. "
                      f"Start Jupyter with `make lab` (or set {VARIABLE}={wanted} before it starts) and "
                      "restart this kernel.", RuntimeWarning, stacklevel=3)

