"""The main job: execute every notebook headless, in order, into a build folder.

Each executed copy is saved with its outputs as .ipynb and .html; what the notebooks measured
(through `helpers.report.record`) is printed as a one-screen summary at the end.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .presentation import read_report
from .settings import REPO_ROOT


@dataclass
class NotebookRun:
    name: str
    seconds: float
    error: str | None


def notebooks(folder: Path = REPO_ROOT / "notebooks") -> list[Path]:
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def execute(path: Path, out_dir: Path, report_file: Path, timeout: int = 3600) -> NotebookRun:
    """Execute one notebook in a fresh kernel; save it with outputs as .ipynb and .html."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    os.environ["SIMSEARCH_REPORT"] = str(report_file)
    os.environ["SIMSEARCH_NOTEBOOK"] = path.stem
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start, error = time.perf_counter(), None
    try:
        client.execute()
    except CellExecutionError as err:
        error = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    seconds = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / path.name)
    html, _ = HTMLExporter().from_notebook_node(nb)
    (out_dir / path.with_suffix(".html").name).write_text(html, encoding="utf-8")
    return NotebookRun(path.stem, seconds, error)


def run_all(out_dir: Path = REPO_ROOT / "build" / "notebooks") -> int:
    """Run every notebook, print the summary, return the number that failed."""
    report_file = out_dir / "measured.jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)
    report_file.unlink(missing_ok=True)
    runs = []
    for path in notebooks():
        print(f"running {path.name} ...", flush=True)
        runs.append(execute(path, out_dir, report_file))
        print(f"  {'ok' if runs[-1].error is None else 'FAILED'} in {runs[-1].seconds:.0f} s", flush=True)
    print(summary(runs, read_report(report_file), out_dir))
    return sum(r.error is not None for r in runs)


def summary(runs: list[NotebookRun], measured: list[dict], out_dir: Path) -> str:
    lines = [f"\n=== {len(runs)} notebooks executed into {out_dir} ({os.environ.get('SIMSEARCH_SCALE', 'full')} scale) ==="]
    for r in runs:
        status = "ok" if r.error is None else f"FAILED: {r.error}"
        lines.append(f"  {r.name:<28} {r.seconds:7.1f} s  {status}")
    if measured:
        lines.append("=== measured in this run ===")
        for m in measured:
            value = f"{m['value']:.4g}" if isinstance(m["value"], float) else str(m["value"])
            lines.append(f"  {m['notebook']:<28} {m['name']:<40} {value} {m['unit']}".rstrip())
    return "\n".join(lines)
