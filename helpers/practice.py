"""Learner copies of the notebooks for a class (`make practice`, docs/teaching.md).

The notebooks in notebooks/ are the teacher's copies. A learner's copy keeps every lesson and
every exercise's question, and leaves out what the class should work out:
- each `<details><summary>Solutions</summary> ... </details>` block of a markdown cell, replaced
  by a one-line note;
- the code of each code cell tagged "exercise" (cell metadata `tags`); its leading comment lines
  stay as the prompt;
- every output.

Usage: `python -m helpers.practice [SOURCE_FOLDER] [OUT_FOLDER]` (default notebooks/ -> build/practice/).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .fileio import atomic_write
from .settings import REPO_ROOT

SOLUTIONS = re.compile(r"<details>\s*<summary>\s*Solutions?\s*</summary>.*?</details>", re.S | re.I)
NOTE = "*(The solutions are in the teacher's copy of this notebook.)*"
EXERCISE_TAG = "exercise"
PROMPT = "# Your code here.\n"


@dataclass(frozen=True)
class PracticeCopy:
    """One learner copy written, with what was taken out of it."""

    path: Path
    solutions_removed: int
    cells_blanked: int


def split_exercise(source: str) -> tuple[str, str]:
    """An exercise cell as (its leading comment lines: the question, the code after them)."""
    lines = source.splitlines(keepends=True)
    head = []
    for line in lines:
        if not line.lstrip().startswith("#"):
            break
        head.append(line if line.endswith("\n") else line + "\n")
    return "".join(head), "".join(lines[len(head):])


def blank_exercise(source: str) -> str:
    """An exercise cell's leading comment lines (the question), then an empty place to write."""
    return split_exercise(source)[0] + PROMPT


def learner_copy(nb: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, int, int]:
    """A learner's copy of `nb` (the original is left as it is), the solution blocks removed and
    the exercise cells blanked; returns (copy, solutions removed, cells blanked)."""
    nb = nbformat.from_dict(nb)   # a deep copy
    removed = blanked = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source, n = SOLUTIONS.subn(NOTE, cell.source)
            removed += n
        elif cell.cell_type == "code":
            if EXERCISE_TAG in cell.get("metadata", {}).get("tags", []):
                cell.source = blank_exercise(cell.source)
                blanked += 1
            cell.outputs, cell.execution_count = [], None
    return nb, removed, blanked


def write_practice(source: str | Path = REPO_ROOT / "notebooks",
                   out: str | Path = REPO_ROOT / "build" / "practice") -> list[PracticeCopy]:
    """Write a learner copy of every numbered notebook in `source` into `out`."""
    source, out = Path(source), Path(out)
    paths = sorted(source.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"{source}: no numbered notebooks (NN_name.ipynb) to copy")
    out.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in paths:
        copy, removed, blanked = learner_copy(nbformat.read(path, as_version=4))
        atomic_write(out / path.name, nbformat.writes(copy))
        copies.append(PracticeCopy(out / path.name, removed, blanked))
    return copies


def main(argv: list[str]) -> int:
    if len(argv) > 2:
        print("usage: python -m helpers.practice [SOURCE_FOLDER] [OUT_FOLDER]", file=sys.stderr)
        return 2
    try:
        copies = write_practice(*argv)
    except (FileNotFoundError, nbformat.reader.NotJSONError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for c in copies:
        print(f"{c.path}: solution blocks removed: {c.solutions_removed}, exercise cells blanked: {c.cells_blanked}")
    print(f"{len(copies)} learner copies in {copies[0].path.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
