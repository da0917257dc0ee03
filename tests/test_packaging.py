"""The project's promises about set-up: one pinned list, clean notebooks, honest commands."""

import json
import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def pins(lines) -> dict[str, str]:
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip().lstrip("-").strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s]+)", line)
        if m:
            found[m.group(1).lower()] = m.group(2)
    return found


REQUIREMENTS = ("requirements.txt", "requirements-scale.txt", "requirements-bench.txt", "requirements-dev.txt",
                "requirements-teach.txt")


def requirement_lines(name: str) -> list[str]:
    return [l for l in (REPO / name).read_text().splitlines() if l.split("#", 1)[0].strip()]


def test_requirements_pin_every_dependency():
    for name in REQUIREMENTS:
        lines = requirement_lines(name)
        assert lines and len(pins(lines)) == len(lines), f"{name}: every requirement must be pinned with =="
    core = pins(requirement_lines("requirements.txt"))
    for name in ("torch", "torchvision", "faiss-cpu", "jupyterlab", "ipywidgets", "pillow", "numpy", "matplotlib", "tqdm"):
        assert name in core, name
    extras = {name: pins(requirement_lines(name)) for name in REQUIREMENTS[1:]}
    assert {"ray", "pymilvus", "milvus-lite"} <= extras["requirements-scale.txt"].keys()
    assert "hnswlib" in extras["requirements-bench.txt"], "published only as source: never in the core"
    assert {"pytest", "nbval", "pytest-xdist"} <= extras["requirements-dev.txt"].keys()
    everything = [n for pinned in [core, *extras.values()] for n in pinned]
    assert len(everything) == len(set(everything)), "a package is pinned in one file only"


def test_pyproject_installs_the_core_and_names_the_extras():
    text = (REPO / "pyproject.toml").read_text()
    assert 'dependencies = { file = ["requirements.txt"] }' in text
    for extra in ("scale", "bench", "dev"):
        assert f'optional-dependencies.{extra} = {{ file = ["requirements-{extra}.txt"] }}' in text


def test_environment_yml_installs_the_same_pinned_set():
    env = (REPO / "environment.yml").read_text().splitlines()
    pip_section = env[[l.strip() for l in env].index("- pip:") + 1:]
    assert pins(pip_section) == {k: v for name in REQUIREMENTS for k, v in pins(requirement_lines(name)).items()}
    assert any(l.strip() == "- -e ." for l in pip_section)


def test_committed_notebooks_carry_no_outputs():
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, path.name


def test_notebooks_follow_the_template():
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
        for heading in ("Key takeaways", "Exercises"):
            assert heading in text, f"{path.name} lacks '{heading}'"
        assert nb["cells"][0]["cell_type"] == "markdown" and "".join(nb["cells"][0]["source"]).startswith("# ")


def test_ci_runs_exactly_the_readme_test_command_then_the_browser_test():
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make run" in readme and "make browser-test" in readme
    text = (REPO / ".ci" / "run").read_text()
    ci = [l.strip() for l in text.splitlines() if l.strip() and not l.startswith(("#", "set ", "cd "))]
    first = ci.index("make test")
    assert ci[-1] == "make browser-test" and ci.count("make test") == 1
    before = "\n".join(ci[:first])
    assert "make" not in before and "dataset-fashion-mnist" in before, "only the data notebook 03_flat_index checks against"
    assert "apt-get install -y dataset-fashion-mnist" in text
    assert "apt-get install -y chromium" in text, "CI installs Debian's chromium when it is missing"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "-m 'not browser'" in pyproject, "`make test` leaves the browser test out"


def test_one_minimum_python_everywhere():
    """pyproject, the Makefile's check, the README and environment.yml name the same minimum."""
    import tomllib

    need = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert need == ">=3.11"
    assert "sys.version_info < (3, 11)" in (REPO / "Makefile").read_text()
    assert "Python 3.11 or newer" in (REPO / "README.md").read_text()
    assert re.search(r"^\s*- python=3\.11$", (REPO / "environment.yml").read_text(), re.M)
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


def test_make_test_keeps_the_notebooks_together_in_order(pytestconfig):
    """`make test`'s xdist scheduling (conftest.py at the root, registered however pytest is
    started here): every notebook cell in one unit (each notebook builds on the ones before it),
    each test file a unit of its own."""
    root = next(p for p in pytestconfig.pluginmanager.get_plugins()
                if getattr(p, "__file__", None) == str(REPO / "conftest.py"))
    hooks = pytestconfig.pluginmanager.hook.pytest_xdist_make_scheduler.get_hookimpls()
    assert any(h.plugin is root for h in hooks), "the scheduler hook is registered"
    cells = ["notebooks/00_welcome.ipynb::Cell 0", "notebooks/11_scaling_out.ipynb::Cell 14"]
    assert {root.xdist_scope(c) for c in cells} == {"notebooks"}
    assert root.xdist_scope("tests/test_store.py::test_build[IVF16,Flat]") == "tests/test_store.py"
    assert root.xdist_scope("tests/test_store.py::test_other") == "tests/test_store.py"
    from helpers.__main__ import TEST_COMMAND

    assert re.search(r"^test:.*\n\t\$\(PY\) -m helpers test$", (REPO / "Makefile").read_text(), re.M)
    assert TEST_COMMAND[:4] == ("-m", "pytest", "-n", "2") and TEST_COMMAND[-2:] == ("notebooks", "tests")


def test_the_test_command_runs_without_make(tmp_path):
    """`python -m helpers test` is `make test` where there is no make (Windows, a bare Python):
    with nothing on PATH it still finds and collects every notebook and test file."""
    import shutil
    import subprocess
    import sys

    env = {**os.environ, "PATH": str(tmp_path)}
    assert shutil.which("make", path=env["PATH"]) is None
    done = subprocess.run([sys.executable, "-m", "helpers", "test", "--collect-only", "-q", "-p", "no:cacheprovider"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "SIMSEARCH_SCALE=quick python -m pytest -n 2" in done.stdout
    assert "notebooks/00_welcome.ipynb" in done.stdout and "tests/test_settings.py" in done.stdout
