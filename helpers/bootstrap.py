"""Colab and Kaggle: the course's first cell, and what it installs there.

Every notebook starts with the same code cell (`first_cell`): on a hosted notebook service that
lacks the course's package it installs that package alone (`--no-deps`), then calls `setup()`,
which installs the pinned packages the host lacks and nothing else: the host's torch,
torchvision, numpy and every other package it has stay as they are (a constraints file holds
them). Anywhere else both do nothing: a checkout is installed with `make install` or pip.

The links that open a notebook in Colab or Kaggle, and the first cell's install line, are built
from one URL, `[project.urls] Repository` in pyproject.toml; `python -m helpers launch-cells`
writes them into every notebook (tests/test_bootstrap.py checks the notebooks match).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from .settings import REPO_ROOT

DIST = "simsearch-course-helpers"
#: module importable only on that service -> its name (the issue's detection, and Colab's own docs')
HOSTS = {"google.colab": "Colab", "kaggle_secrets": "Kaggle"}
#: core pins that run notebooks outside a hosted service (make run, make lab): the host has its own
RUNNER_ONLY = frozenset({"jupyterlab", "nbclient", "nbconvert", "ipykernel"})
FAISS_CPU, FAISS_GPU = "faiss-cpu", "faiss-gpu"
FIRST_LINE = "# Colab or Kaggle: install the course's helpers, then only what this host lacks."


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:   # a parent package missing ("google")
        return False


def host() -> str | None:
    """'Colab' or 'Kaggle' where the notebook runs on that service, else None."""
    return next((name for module, name in HOSTS.items() if _importable(module)), None)


def _pins(requirements: list[str]) -> dict[str, str]:
    found = {}
    for line in requirements:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)\s*(#.*)?", line)
        if m:                                   # lines with a marker (the extras) do not match
            found[m.group(1).lower()] = m.group(2)
    return found


def core_pins() -> dict[str, str]:
    """The core requirements, name -> pinned version: from the installed package's metadata
    (Colab installs a wheel), else from the checkout's requirements.txt."""
    try:
        return _pins(metadata.requires(DIST) or [])
    except metadata.PackageNotFoundError:
        return _pins((REPO_ROOT / "requirements.txt").read_text().splitlines())


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def version_rows(pins: dict[str, str] | None = None) -> list[dict]:
    """Each core pin beside the version installed here (notebook 00_welcome). ok: 'yes'; on Colab or
    Kaggle the host's own version, or a runner-only package it does not need; else 'NO'."""
    service = host()
    rows = []
    for name, pin in (pins or core_pins()).items():
        have = installed(name) or (installed(FAISS_GPU) if name == FAISS_CPU else None)
        if have == pin:
            ok = "yes"
        elif service and have:
            ok = f"{service}'s own"
        elif service and name in RUNNER_ONLY:
            ok = f"not needed on {service}"
        else:
            ok = "NO"
        rows.append({"package": name, "pinned": pin, "installed": have or "not installed", "ok": ok})
    return rows


def _cuda_12() -> bool:
    """A CUDA 12 GPU that torch sees: faiss-gpu's wheels are built for CUDA 12."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available() and (torch.version.cuda or "").startswith("12.")


def missing(pins: dict[str, str], gpu: bool | None = None) -> list[str]:
    """The `name==pin` requirements to install here: the core pins this host lacks, without the
    runner-only ones; Faiss as faiss-gpu where a CUDA 12 GPU is there, unless a Faiss is installed."""
    wanted = []
    for name, pin in pins.items():
        if name in RUNNER_ONLY or installed(name):
            continue
        if name == FAISS_CPU:
            if _importable("faiss"):
                continue
            if _cuda_12() if gpu is None else gpu:
                name = FAISS_GPU
        wanted.append(f"{name}=={pin}")
    return wanted


def held_versions() -> dict[str, str]:
    """Every installed distribution's version, name -> version; where a name is installed twice
    (user and system site-packages), the one import finds first: one constraint a name."""
    held = {}
    for dist in metadata.distributions():   # in sys.path order
        name = dist.metadata["Name"]
        if name:
            held.setdefault(re.sub(r"[-_.]+", "-", name).lower(), dist.version)
    return held


def _pip_install(requirements: list[str]) -> subprocess.CompletedProcess:
    """pip install, with every installed distribution held at its version (a constraints file)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("".join(f"{name}=={version}\n" for name, version in sorted(held_versions().items())))
    try:
        return subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                               "--constraint", f.name, *requirements], capture_output=True, text=True)
    finally:
        os.unlink(f.name)


def setup(scale: str = "quick") -> None:
    """On Colab or Kaggle: install what `missing` lists, make it importable without a restart,
    default SIMSEARCH_SCALE to `scale`, and say in one line what it did. Elsewhere: nothing.
    Raises RuntimeError (one line, pip's last line) when pip cannot install without changing the host."""
    service = host()
    if service is None:
        return
    os.environ.setdefault("SIMSEARCH_SCALE", scale)
    wanted = missing(core_pins())
    if not wanted:
        print(f"{service}: everything the course needs is installed (the host's own versions are kept)")
        return
    done = _pip_install(wanted)
    if done.returncode and any(r.startswith(FAISS_GPU) for r in wanted):
        print(f"{service}: no faiss-gpu wheel fits this host ({_last_line(done)}): installing faiss-cpu")
        wanted = [re.sub(f"^{FAISS_GPU}==", f"{FAISS_CPU}==", r) for r in wanted]
        done = _pip_install(wanted)
    if done.returncode:
        raise RuntimeError(f"pip could not install {' '.join(wanted)} beside {service}'s packages: {_last_line(done)}")
    importlib.invalidate_caches()
    print(f"{service}: installed {', '.join(wanted)} (scale {os.environ['SIMSEARCH_SCALE']}; "
          "the host's torch, torchvision and numpy kept)")


def _last_line(done: subprocess.CompletedProcess) -> str:
    """pip's last ERROR line (its reason), else its last line."""
    lines = [l.strip() for l in (done.stdout + done.stderr).splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("ERROR:")]
    return (errors or lines or [f"exit status {done.returncode}"])[-1]


# --- the links and the first cell, written into every notebook --------------------------------

def repository_url(pyproject: Path = REPO_ROOT / "pyproject.toml") -> str | None:
    """`[project.urls] Repository` (a GitHub URL), or None while the course has no public home."""
    import tomllib

    urls = tomllib.loads(pyproject.read_text()).get("project", {}).get("urls", {})
    return urls.get("Repository", "").rstrip("/") or None


def launch_links(url: str, notebook: str, branch: str = "main") -> str:
    """Markdown links opening notebooks/<notebook> of the GitHub repository `url` in Colab and Kaggle."""
    m = re.fullmatch(r"https://github\.com/([^/\s]+)/([^/\s]+?)(\.git)?", url)
    if not m:
        raise ValueError(f"the repository URL must be https://github.com/OWNER/NAME, not {url!r}")
    path = f"{m.group(1)}/{m.group(2)}/blob/{branch}/notebooks/{notebook}"
    return (f"[Open in Colab](https://colab.research.google.com/github/{path}) · "
            f"[Open in Kaggle](https://kaggle.com/kernels/welcome?src=https://github.com/{path})")


def first_cell(url: str | None) -> str:
    """The first code cell: a few lines that get `helpers` onto the host, then `setup()`."""
    source = (f'os.environ.get("SIMSEARCH_COURSE_SOURCE", "{DIST} @ git+{url}")' if url else
              'os.environ["SIMSEARCH_COURSE_SOURCE"]  # the course has no public repository yet: a wheel or git URL')
    return f"""{FIRST_LINE} Elsewhere: nothing.
import importlib.util, os, subprocess, sys


def importable(module):
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


if not importable("helpers") and (importable("google.colab") or importable("kaggle_secrets")):
    source = {source}
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", source], check=True)
    importlib.invalidate_caches()
import helpers.bootstrap

helpers.bootstrap.setup()"""


def launch_cells(nb: dict, notebook: str, url: str | None) -> dict:
    """`nb` (notebook JSON) with the launch links under its title and the first code cell as
    `first_cell` builds them; run again, it changes nothing."""
    title, *rest = "".join(nb["cells"][0]["source"]).split("\n")
    rest = [line for line in rest if not line.startswith("[Open in Colab]")]
    header = "\n".join([title, *([launch_links(url, notebook)] if url else []), *rest])
    cells = [c for c in nb["cells"][1:] if not "".join(c["source"]).startswith(FIRST_LINE)]
    code = {"cell_type": "code", "execution_count": None, "id": "launch", "metadata": {},
            "outputs": [], "source": first_cell(url).splitlines(keepends=True)}
    nb["cells"] = [{**nb["cells"][0], "source": header.splitlines(keepends=True)}, code, *cells]
    return nb


def write_launch_cells(folder: Path, url: str | None) -> list[Path]:
    """Bring every numbered notebook in `folder` up to date (`launch_cells`); returns those changed."""
    changed = []
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        text = path.read_text(encoding="utf-8")
        new = json.dumps(launch_cells(json.loads(text), path.name, url), indent=1, ensure_ascii=False) + "\n"
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed
