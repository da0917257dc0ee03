"""helpers.runner (`make run`): every notebook gets a summary line, whatever happens to it."""

from __future__ import annotations

import re

import nbformat
import pytest

from helpers.runner import execute, run_all

CELLS = {
    "01_ok": ["from helpers.runner import record", "record('answer', 42, 'units')"],
    "02_error": ["raise ValueError('the claim did not hold')"],
    "03_dead_kernel": ["import os", "os._exit(1)"],
    "04_timeout": ["import time", "time.sleep(600)"],
    "05_after": ["from helpers.runner import record", "record('still ran', 1.5)"],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The five notebooks above, written once, and the folder `run_all` saves into."""
    folder = tmp_path_factory.mktemp("notebooks")
    paths = []
    for name, cells in CELLS.items():
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        paths.append(folder / f"{name}.ipynb")
        nbformat.write(nb, paths[-1])
    out = folder / "build"
    return out, paths


def test_failures_are_summarised_and_the_run_goes_on(run, capfd, monkeypatch):
    """All but 04_timeout, with a 30-second cell timeout: ample for these cells on a busy
    machine (4 s was not)."""
    out, paths = run
    paths = [p for p in paths if p.stem != "04_timeout"]
    monkeypatch.setenv("SIMSEARCH_SCALE", "quick")
    failed = run_all(out, paths, timeout=30)
    stdout, stderr = capfd.readouterr()
    assert failed == 2
    summary = stdout[stdout.index("=== 4 notebooks"):].splitlines()
    assert summary[0] == f"=== 4 notebooks executed into {out} (quick scale): 2 ok, 2 failed ==="
    status = {line.split()[0]: line.split(" s  ", 1)[1] for line in summary[1:5]}
    assert status == {"01_ok": "ok",
                      "02_error": "FAILED: ValueError: the claim did not hold",
                      "03_dead_kernel": "FAILED: the kernel died (out of memory, or a crash in native code?)",
                      "05_after": "ok"}
    measured = [line.split() for line in summary[6:]]
    assert summary[5] == "=== measured in this run ===" and measured == [
        ["01_ok", "answer", "42", "units"], ["05_after", "still", "ran", "1.5"]]
    # nothing else: no kernel warnings or progress debris between the lines
    progress = re.compile(r"^(running \d\d_\w+\.ipynb \.\.\.|  (ok|FAILED) in \d+ s)$")
    assert all(progress.match(line) for line in stdout[: stdout.index("\n=== 4")].splitlines())
    assert stderr == ""
    for path in paths:   # every notebook saved with its outputs, failed or not
        assert (out / path.name).is_file() and (out / path.with_suffix(".html").name).is_file()
    saved = nbformat.read(out / "02_error.ipynb", as_version=4)
    assert saved.cells[0].outputs[0]["ename"] == "ValueError"


def test_a_cell_past_the_timeout_fails_its_notebook_and_the_next_one_runs(run, capfd, monkeypatch):
    """04 sleeps 600 s; a 10-second timeout stops it (a separate run: waiting out the 30 s
    the other cells need would double this file's time), and 05 still runs after it."""
    out, paths = run
    monkeypatch.setenv("SIMSEARCH_SCALE", "quick")
    assert run_all(out / "timeout", [p for p in paths if p.stem in ("04_timeout", "05_after")], timeout=10) == 1
    summary = capfd.readouterr().out.split("=== 2 notebooks", 1)[1].splitlines()
    status = {line.split()[0]: line.split(" s  ", 1)[1] for line in summary[1:3]}
    assert status == {"04_timeout": "FAILED: a cell ran past the timeout", "05_after": "ok"}
    assert (out / "timeout" / "04_timeout.ipynb").is_file()


def test_a_bad_setting_stops_before_any_notebook(run, capsys, monkeypatch):
    from helpers.__main__ import main

    monkeypatch.setenv("SIMSEARCH_SCALE", "medium")
    assert main(["run"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == ("error: SIMSEARCH_SCALE='medium' is not a setting the course knows: "
                                 "use one of quick, full.\n")


def test_an_error_a_cell_shows_without_stopping_fails_the_notebook(tmp_path, monkeypatch):
    """A display formatter that fails inside display() (or plt.show()) shows a traceback and the
    cell goes on: the kernel reports success, nbval a failure; the runner too."""
    cells = ["class Broken:\n    def _repr_html_(self):\n        raise RuntimeError('cannot show this')",
             "from IPython.display import display\ndisplay(Broken())\nprint('went on')"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbformat.write(nb, tmp_path / "06_shown.ipynb")
    monkeypatch.setenv("SIMSEARCH_SCALE", "quick")
    run = execute(tmp_path / "06_shown.ipynb", tmp_path / "out", tmp_path / "report.jsonl", timeout=60)
    assert run.error == "cell 1 showed an error: RuntimeError: cannot show this"
