"""The main job: execute every notebook headless, in order, into a build folder.

Each executed copy is saved with its outputs as .ipynb and .html; what the notebooks measured
(through `record`, in every notebook's check cell) is printed as a one-screen summary at the end. A
notebook that fails, whose kernel dies or whose cell runs past the timeout gets a FAILED line
saying which and why; the run goes on with the next notebook and always ends with the summary.
What a kernel process prints itself (not its cells' outputs) goes to `<notebook>.kernel.log`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from .fileio import first_line
from .settings import REPO_ROOT, load_settings

#: Seconds one cell may run before the notebook is stopped and reported as timed out.
CELL_TIMEOUT_S = 3600


# ---------------------------------------------------------------- the run report

def record(name: str, value: float | int | str, unit: str = "") -> None:
    """Note a figure a notebook measured, for `make run`'s summary (every notebook's check cell).

    Displays nothing; when SIMSEARCH_REPORT names a file (the runner sets it, with
    SIMSEARCH_NOTEBOOK), appends one JSON line there with the notebook's name.
    """
    target = os.environ.get("SIMSEARCH_REPORT")
    if not target:
        return
    if hasattr(value, "item"):
        value = value.item()  # numpy scalars
    line = {"notebook": os.environ.get("SIMSEARCH_NOTEBOOK", "?"), "name": name, "value": value,
            "unit": unit}
    with Path(target).open("a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def read_report(path: str | Path) -> list[dict]:
    """The lines `record` wrote, in order (the runner's summary)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class NotebookRun:
    name: str
    seconds: float
    error: str | None


def notebooks(folder: Path = REPO_ROOT / "notebooks") -> list[Path]:
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def _quiet_logger() -> logging.Logger:
    """nbclient's and jupyter_client's own log lines (kernel restarts, transport warnings) would
    fall between the summary's lines: they go nowhere; the failure is reported in the summary."""
    log = logging.getLogger("helpers.runner.kernel")
    log.propagate = False
    log.handlers[:] = [logging.NullHandler()]
    return log


def _reason(err: BaseException) -> str:
    """One line on why a notebook stopped."""
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    if isinstance(err, CellTimeoutError):
        return "a cell ran past the timeout"
    if isinstance(err, DeadKernelError):
        return "the kernel died (out of memory, or a crash in native code?)"
    if isinstance(err, CellExecutionError):   # the traceback's last line, without its colours
        lines = [ln for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines() if ln.strip()]
        return lines[-1] if lines else type(err).__name__   # "SomeError: message", the cell's own
    return first_line(err, typed=True)


def _shown_error(nb) -> str | None:
    """An error a cell showed without stopping (a display formatter's failure inside display() or
    plt.show()): the first one, in one line, or None."""
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return f"cell {i} showed an error: {output.get('ename')}: {output.get('evalue')}"
    return None


def execute(path: Path, out_dir: Path, report_file: Path, timeout: int = CELL_TIMEOUT_S) -> NotebookRun:
    """Execute one notebook in a fresh kernel; save it with outputs as .ipynb and .html.

    Any failure (a cell's error, an error a cell showed and went on, a dead kernel, a cell past
    `timeout` seconds, a kernel that will not start) is caught and returned as the run's error;
    the copy is saved either way.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    env = {**os.environ, "SIMSEARCH_REPORT": str(report_file), "SIMSEARCH_NOTEBOOK": path.stem}
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", log=_quiet_logger(),
                            resources={"metadata": {"path": str(path.parent)}})
    out_dir.mkdir(parents=True, exist_ok=True)
    start, error = time.perf_counter(), None
    # the kernel process's own output (its transport warning, native libraries' messages, a
    # crash report) goes to <name>.kernel.log instead of between the summary's lines
    with (out_dir / f"{path.stem}.kernel.log").open("wb") as kernel_log, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            client.execute(env=env, stdout=kernel_log, stderr=kernel_log)
        except Exception as err:  # one notebook's failure must not stop the run: report it
            error = _reason(err)
    seconds = time.perf_counter() - start
    error = error or _shown_error(nb)
    nbformat.write(nb, out_dir / path.name)
    html, _ = HTMLExporter().from_notebook_node(nb)
    (out_dir / path.with_suffix(".html").name).write_text(html, encoding="utf-8")
    return NotebookRun(path.stem, seconds, error)


def run_all(out_dir: Path = REPO_ROOT / "build" / "notebooks", paths: list[Path] | None = None,
            timeout: int = CELL_TIMEOUT_S) -> int:
    """Run every notebook (or `paths`), print the summary, return the number that failed.

    The settings are checked first (a SettingsError before any notebook starts).
    """
    scale = load_settings().scale
    report_file = out_dir / "measured.jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)
    report_file.unlink(missing_ok=True)
    runs = []
    for path in notebooks() if paths is None else paths:
        print(f"running {path.name} ...", flush=True)
        runs.append(execute(path, out_dir, report_file, timeout))
        print(f"  {'ok' if runs[-1].error is None else 'FAILED'} in {runs[-1].seconds:.0f} s", flush=True)
    print(summary(runs, read_report(report_file), out_dir, scale), flush=True)
    return sum(r.error is not None for r in runs)


def summary(runs: list[NotebookRun], measured: list[dict], out_dir: Path, scale: str) -> str:
    failed = sum(r.error is not None for r in runs)
    lines = [f"\n=== {len(runs)} notebooks executed into {out_dir} ({scale} scale): "
             f"{len(runs) - failed} ok, {failed} failed ==="]
    for r in runs:
        status = "ok" if r.error is None else f"FAILED: {r.error}"
        lines.append(f"  {r.name:<28} {r.seconds:7.1f} s  {status}")
    if measured:
        lines.append("=== measured in this run ===")
        for m in measured:
            value = f"{m['value']:.4g}" if isinstance(m["value"], float) else str(m["value"])
            lines.append(f"  {m['notebook']:<28} {m['name']:<40} {value} {m['unit']}".rstrip())
    return "\n".join(lines)
