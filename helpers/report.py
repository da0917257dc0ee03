"""Recording what a notebook measured, so `make run` can print a one-screen summary.

`record("IVF recall@10", 0.97)` displays nothing; when SIMSEARCH_REPORT names a file (the
notebook runner sets it), it appends one JSON line there with the notebook's name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def record(name: str, value: float | int | str, unit: str = "") -> None:
    target = os.environ.get("SIMSEARCH_REPORT")
    if not target:
        return
    if hasattr(value, "item"):
        value = value.item()  # numpy scalars
    line = {"notebook": os.environ.get("SIMSEARCH_NOTEBOOK", "?"), "name": name, "value": value,
            "unit": unit}
    with Path(target).open("a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def read(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
