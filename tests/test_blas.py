"""helpers.blas: the kernels chosen from the CPU's instruction sets, a user's own choice kept, Faiss
loaded with them after `import helpers`, and a warning when Faiss was loaded first with others."""

import os
import platform
import subprocess
import sys

import pytest

from helpers import blas

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = blas.cpu_flags()
X86_OPENBLAS = platform.machine() == "x86_64" and blas._faiss_openblas() is not None


def python(code: str, **env) -> str:
    """stdout of `code` in a fresh Python whose environment has no OPENBLAS_CORETYPE except `env`'s."""
    base = {k: v for k, v in os.environ.items() if k != blas.VARIABLE}
    done = subprocess.run([sys.executable, "-c", code], env={**base, **env}, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("flags,kernels", [
    ({"sse3", "avx", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}, "SkylakeX"),
    ({"sse3", "avx", "avx2", "fma", "avx512f"}, "Haswell"),     # AVX-512 foundation alone is not SkylakeX's set
    ({"sse3", "avx", "avx2", "fma"}, "Haswell"),
    ({"sse3", "avx", "avx2"}, None),                              # no FMA: leave OpenBLAS to choose
    (set(), None),
])
def test_kernels_follow_the_instruction_sets(flags, kernels):
    assert blas.kernels_for(flags) == kernels


def test_cpu_flags_read_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse3 avx2 fma\nbugs\t\t: x\n")
    assert blas.cpu_flags(info) == {"fpu", "sse3", "avx2", "fma"}
    assert blas.cpu_flags(tmp_path / "missing") == frozenset()


def test_choose_kernels_sets_the_variable_unless_the_user_did(monkeypatch):
    monkeypatch.setattr(blas, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setattr(blas.sys, "platform", "linux")
    env = {}
    assert blas.choose_kernels(env) == "Haswell" and env == {blas.VARIABLE: "Haswell"}
    mine = {blas.VARIABLE: "Prescott"}
    assert blas.choose_kernels(mine) == "Prescott" and mine == {blas.VARIABLE: "Prescott"}
    monkeypatch.setattr(blas, "cpu_flags", lambda: frozenset({"sse3"}))
    bare = {}
    assert blas.choose_kernels(bare) is None and bare == {}


@pytest.mark.skipif(not X86_OPENBLAS or blas.kernels_for(FLAGS) is None,
                    reason="needs x86-64 Faiss with its bundled OpenBLAS on a CPU with AVX2 + FMA")
def test_importing_helpers_first_loads_faiss_with_the_chosen_kernels():
    out = python("import os, helpers, faiss; from helpers.blas import faiss_kernels; "
                 "print(os.environ['OPENBLAS_CORETYPE'], faiss_kernels())")
    assert out.split() == [blas.kernels_for(FLAGS)] * 2


@pytest.mark.skipif(not X86_OPENBLAS or "avx2" not in FLAGS or "fma" not in FLAGS,
                    reason="needs x86-64 Faiss with its bundled OpenBLAS on a CPU with AVX2 + FMA")
def test_faiss_loaded_first_with_other_kernels_gives_a_warning():
    code = """
import os, warnings
os.environ["OPENBLAS_CORETYPE"] = {first!r}
import faiss
os.environ["OPENBLAS_CORETYPE"] = "Haswell"
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import helpers
print(len(caught), caught[0].message if caught else "")
"""
    warned = python(code.format(first="Prescott"))
    assert warned.startswith("1 Faiss was imported before `helpers`") and "runs Prescott kernels" in warned
    assert python(code.format(first="Haswell")) == "0", "no warning when Faiss runs the kernels named"
