"""Shared fixtures: small, self-made image folders so tests never depend on data/."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image

import helpers  # noqa: F401  (before any test module imports faiss: it chooses Faiss's BLAS kernels)


def write_photo(path: Path, seed: int, size=(64, 48), fmt: str | None = None) -> Path:
    """A small deterministic 'photo': a smooth gradient with noise, distinct per seed."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    base = np.linspace(0, 1, w)[None, :, None] * rng.uniform(50, 200, 3) + rng.uniform(0, 55, 3)
    arr = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, fmt)
    return path


def run_here(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m helpers ARGS` in this process, with `env` added to the environment: without an
    interpreter's start-up (4-5 s with torch each), for error cases and repeat runs; each CLI test
    file also runs commands in a subprocess, as a user would."""
    from helpers.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, env or {}), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:   # argparse's usage errors
            code = exit_.code
    return subprocess.CompletedProcess(["python", "-m", "helpers", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture
def faiss_one_thread():
    """Faiss on one thread: tiny test indexes, and OpenMP threads waiting for a busy core make
    them many times slower on a shared CI machine."""
    import faiss
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Two labels (cats/, dogs/), three photos each, plus one at the top level."""
    root = tmp_path / "photos"
    for label, base in (("cats", 0), ("dogs", 10)):
        for i in range(3):
            write_photo(root / label / f"{label}_{i}.jpg", base + i)
    write_photo(root / "loose.png", 99)
    return root


def build_index(factory: str, xb, ids, metric: str = "cosine"):
    """An index built as the notebooks build them (`helpers.indexes.build`)."""
    from helpers.indexes import build

    return build(factory, xb, ids, metric)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need a CUDA GPU: where torch sees none they are skipped, saying so."""
    marked = [item for item in items if item.get_closest_marker("gpu")]
    if marked:
        import torch

        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason=f"no CUDA GPU: torch {torch.__version__} sees none")
            for item in marked:
                item.add_marker(skip)
