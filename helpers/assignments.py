"""Autograded assignments with nbgrader (`make assignments`, docs/teaching.md).

The teacher's notebooks stay the one source of the questions and the answers. Each notebook
becomes one nbgrader assignment (named by its stem). Its "## Exercises" list and Solutions block
(found as helpers.practice finds them) become, per exercise, a locked question cell and then:
- where `CHECKS` holds a hidden test: a code answer cell (the solution's python between
  `### BEGIN SOLUTION` and `### END SOLUTION`), a locked test cell with points, the test between
  `### BEGIN HIDDEN TESTS` and `### END HIDDEN TESTS`, and, where the solution has words (the
  why), a markdown cell graded by hand holding them;
- otherwise: a markdown answer cell graded by hand, holding the teacher's answer.
A code cell tagged "exercise" answers the exercise its first comment names ("# Exercise 1: ...").

Hidden tests recompute or verify what the learner's answer holds, on any folder of photos.

Usage: `python -m helpers.assignments [SOURCE_FOLDER] [COURSE_FOLDER] [--check]` (default
notebooks/ -> build/nbgrader/). It writes the source tree, runs `nbgrader generate_assignment`
for the release tree; `--check` autogrades the teacher's copy (full marks) and the blank release
copy (0) of every assignment, in a course folder of its own (build/nbgrader-check/).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell

from .fileio import atomic_write, first_line
from .practice import EXERCISE_TAG, SOLUTIONS, split_exercise
from .settings import REPO_ROOT

HEADING = re.compile(r"^##\s+Exercises\s*$", re.M)
ITEM = re.compile(r"^(\d+)\.[ \t]+", re.M)
PYTHON = re.compile(r"^[ \t]*```python[ \t]*\n(.*?)^[ \t]*```[ \t]*$\n?", re.M | re.S)
TAGGED_NUMBER = re.compile(r"#\s*Exercise\s+(\d+)", re.I)
MANUAL_POINTS = 1
TEACHER, BLANK = "teacher", "blank"
CONFIG = """c = get_config()  # noqa: F821  (nbgrader's configuration, written by helpers.assignments)
c.CourseDirectory.course_id = "simsearch"
c.Execute.timeout = 1800          # seconds a cell may run: the notebooks' longest steps
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}
"""


class AssignmentError(ValueError):
    """A notebook's exercises cannot be made into an assignment."""


@dataclass(frozen=True)
class Check:
    """A hidden test for one exercise: `ask` is appended to the question in the assignment."""

    test: str
    ask: str = ""
    points: int = 2


def keep(*names: str, what: str = "") -> str:
    """The instruction that names the variables a hidden test reads."""
    return ("Keep " + (f"{what} " if what else "your answer ") + "in "
            + " and ".join(f"`{n}`" for n in names) + ": the tests read it.")


def _check(ask: str, test: str, points: int = 2) -> Check:
    return Check(textwrap.dedent(test).strip() + "\n", ask, points)


# (notebook stem, exercise number) -> its hidden test; every other exercise is graded by hand.
CHECKS: dict[tuple[str, int], Check] = {
    ("00_welcome", 2): _check(keep("bb"), """
        assert bb.name in backbones.REGISTRY, "bb: load the backbone with backbones.load_backbone"
        assert settings.backbone in ("auto", bb.name), "bb: the backbone the settings name"
        assert bb.reason.strip(), "a loaded backbone says why it was chosen"
        """),
    ("00_welcome", 3): _check(keep("pins_changed"), """
        real = bootstrap.core_pins()
        pretend = {p for p, v in pins_changed.items() if real.get(p) != v}
        assert pretend, "pins_changed: give at least one package another version"
        flagged = {r["package"] for r in bootstrap.version_rows(pins_changed) if r["ok"] != "yes"}
        assert pretend <= flagged, "every package pinned at another version is flagged"
        """),
    ("00_welcome", 4): _check(keep("mine"), """
        assert not mine.is_sample, "mine: point SIMSEARCH_DATASET at a folder"
        assert mine.dataset_name == mine.image_dir.name, "the folder's name names the data set"
        assert mine.work_dir.name.startswith(mine.image_dir.name)
        """),
    ("01_data_manifest", 2): _check(keep("again") + " Copy the photo into another label's folder.", """
        import collections, hashlib
        same = collections.defaultdict(list)
        for e in again.manifest:
            same[hashlib.sha256(again.manifest.abspath(e).read_bytes()).hexdigest()].append(e)
        groups = [sorted(g, key=lambda e: e.path) for g in same.values() if len(g) > 1]
        assert any(len({e.label for e in g}) > 1 for g in groups), "no photo copied into another label"
        for g in groups:
            assert g[0].duplicate_of is None and all(e.duplicate_of == g[0].id for e in g[1:])
        """),
    ("01_data_manifest", 3): _check(keep("before", "after", what="the manifests before and after the deletion"), """
        assert len(after) == len(before) - 1, "delete one photo, then refresh"
        id_of = {e.path: e.id for e in before}
        assert all(id_of[e.path] == e.id for e in after), "refresh keeps every file's id"
        """),
    ("02_features", 1): _check(keep("hardest", what="the six rows of `similarity`"), """
        best = similarity.max(axis=1)
        assert len(hardest) == 6
        assert np.allclose(np.sort(best[np.asarray(hardest)]), np.sort(best)[:6])
        """),
    ("02_features", 3): _check(keep("small", what="the small folder's manifest"), """
        import hashlib
        changed = {e.id for e in small if hashlib.sha256(small.abspath(e).read_bytes()).hexdigest() != e.sha256}
        assert changed, "change an image after making the manifest"
        assert {f[0] for f in extract(small, backbone, progress=False).failures} == changed
        """),
    ("03_flat_index", 3): _check(keep("per_query", what="the distractors in each query's top-5"), """
        top = ids[np.argsort(-(xq @ xb.T), axis=1)[:, :5]]
        expected = (top >= DISTRACTOR_ID_START).sum(axis=1)
        assert np.shape(per_query) == (len(xq),)
        assert np.mean(np.asarray(per_query) == expected) >= 0.95, "count per query, in the top-5"
        """),
    ("03_flat_index", 4): _check(keep("raw_ip", "top", what="the top-5 of the first five raw vectors"), """
        assert raw_ip.ntotal == len(raw) and raw_ip.metric_type == faiss.METRIC_INNER_PRODUCT
        scores = raw[:5] @ raw.T
        got = np.take_along_axis(scores, np.asarray(top), axis=1)
        assert np.allclose(got, -np.sort(-scores, axis=1)[:, :5], rtol=1e-4)
        """),
    ("03_flat_index", 5): _check(keep("earlier"), """
        assert earlier.rank <= len(real_db) - 1, "the earlier model spans at most len(real_db) - 1 directions"
        sample = earlier.sample(200)[0]
        assert sample.shape[1] == real_db.shape[1]
        """),
    ("04_ivf", 1): _check(keep("ivf2"), """
        assert faiss.extract_index_ivf(ivf2).nlist == nlist // 2, "halve nlist"
        assert ivf2.is_trained and ivf2.ntotal == len(xb)
        """),
    ("04_ivf", 3): _check(keep("small"), """
        assert faiss.extract_index_ivf(small).nlist == nlist and small.ntotal == len(xb)
        assert faiss.extract_index_ivf(small).quantizer.ntotal == nlist, "train it"
        """),
    ("05_product_quantization", 1): _check(keep("index", what="the last index you built"), """
        pq = faiss.downcast_index(faiss.extract_index_ivf(index)).pq
        assert pq.nbits == 4 and pq.M * 4 == m * nbits, "4-bit codes, twice the m: the same bytes"
        assert index.ntotal == len(xb)
        """),
    ("05_product_quantization", 3): _check(keep("candidates", "top", what="ids, one row a query"), """
        def exact(rows_of_ids):
            return np.stack([xb[[row_of[int(i)] for i in r]] @ q for r, q in zip(rows_of_ids, xq)])
        assert np.shape(top) == (len(xq), 10)
        assert all(set(t) <= set(c) for t, c in zip(top, candidates)), "re-rank the candidates"
        best = -np.sort(-exact(candidates), axis=1)[:, :10]
        assert np.allclose(-np.sort(-exact(top), axis=1), best, atol=1e-5), "the 10 best by exact score"
        """),
    ("06_hnsw", 1): _check(keep("g", what="the last graph you built"), """
        hnsw = faiss.downcast_index(g.index).hnsw
        assert hnsw.nb_neighbors(1) in (16, 64) and g.ntotal == len(xb)
        """),
    ("07_gpu", 3): _check(keep("pos", what="the positions from the last `torch_knn`"), """
        unit_b, unit_q = xb / np.linalg.norm(xb, axis=1, keepdims=True), xq / np.linalg.norm(xq, axis=1, keepdims=True)
        scores = unit_q @ unit_b.T
        got = np.take_along_axis(scores, np.asarray(pos), axis=1)
        assert np.allclose(got, -np.sort(-scores, axis=1)[:, :k], atol=1e-4), "the exact top-k"
        """),
    ("07_gpu", 4): _check(keep("half", "cos", what="the low-precision features and their cosines"), """
        a = features.vectors / np.linalg.norm(features.vectors, axis=1, keepdims=True)
        b = half.vectors / np.linalg.norm(half.vectors, axis=1, keepdims=True)
        assert np.allclose(cos, (a * b).sum(axis=1), atol=1e-4)
        """),
    ("08_tuning", 1): _check(keep("rec16", "index16"), """
        assert rec16.estimated_bytes <= flat_bytes / 16, "a choice within 1/16 of Flat's memory"
        assert index16.is_trained and index16.ntotal == n
        """),
    ("08_tuning", 2): _check(keep("swapped"), """
        assert swapped.target == RECALL_TARGET and swapped.rows
        if swapped.reached:
            faiss.ParameterSpace().set_index_parameters(index, swapped.setting)
            found = index.search(test_q, 10)[1]
            hits = [len(set(a) & set(b)) / 10 for a, b in zip(found, np.asarray(test_truth)[:, :10])]
            assert np.mean(hits) >= RECALL_TARGET, "tuned on the test half: it reaches the target there"
        """),
    ("09_serialization", 1): _check(keep("mapped_ivf", "first", "again"), """
        assert faiss.extract_index_ivf(mapped_ivf).nlist == nlist and mapped_ivf.ntotal > 0
        assert first > 0 and again > 0
        """),
    ("09_serialization", 2): _check(keep("other", what="the backbone identity you pass"), """
        assert other["preprocessing"] != backbone.identity()["preprocessing"]
        try:
            store.load(bundle_path, backbone=other)
            refused = False
        except store.BundleError:
            refused = True
        assert refused, "a bundle refuses vectors of another preprocessing"
        """),
    ("09_serialization", 3): _check(keep("index"), """
        assert isinstance(faiss.downcast_index(index), faiss.IndexIDMap)
        assert isinstance(faiss.downcast_index(faiss.downcast_index(index).index), faiss.IndexFlat)
        assert index.ntotal == len(vectors)
        """),
    ("10_search_explorer", 1): _check(keep("coarse"), """
        assert faiss.extract_index_ivf(coarse).nlist == nlist // 4 and coarse.ntotal == len(xb)
        assert f"IVF{nlist // 4},Flat" in app.index_picker.options, "add it to the app"
        """),
}


@dataclass
class Exercise:
    """One exercise of a notebook: its question, its solution text and code."""

    number: int
    question: str
    answer: str = ""
    code: str = ""
    prompt: str = ""   # the leading comments of a tagged exercise cell


def numbered(text: str) -> dict[int, str]:
    """The items of a numbered markdown list, by number (an item runs to the next one)."""
    marks = list(ITEM.finditer(text))
    ends = [m.start() for m in marks[1:]] + [len(text)]
    items = {}
    for m, end in zip(marks, ends):
        first, _, rest = text[m.end():end].partition("\n")
        items[int(m.group(1))] = (first + "\n" + textwrap.dedent(rest)).strip()
    return items


def split_answer(text: str) -> tuple[str, str]:
    """A solution item as (its prose, its python blocks joined)."""
    code = "\n".join(textwrap.dedent(block).strip() for block in PYTHON.findall(text))
    return PYTHON.sub("", text).strip(), code


def exercises_of(cell_source: str) -> tuple[str, list[Exercise]] | None:
    """The markdown before "## Exercises", and its exercises; None without a Solutions block."""
    heading, solutions = HEADING.search(cell_source), SOLUTIONS.search(cell_source)
    if not (heading and solutions):
        return None
    questions = numbered(cell_source[heading.end():solutions.start()])
    answers = numbered(re.sub(r"</?details>|<summary>.*?</summary>", "", solutions.group(0)))
    if not questions or set(answers) - set(questions):
        raise AssignmentError(f"the exercises {sorted(questions)} and solutions {sorted(answers)} differ")
    out = []
    for n, question in questions.items():
        prose, code = split_answer(answers.get(n, ""))
        out.append(Exercise(n, question, prose, code))
    return cell_source[:heading.start()].rstrip(), out


def graded(cell, grade_id: str, *, solution=False, grade=False, locked=False, points=0):
    """`cell` with nbgrader's metadata (schema 3)."""
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
            "solution": solution, "task": False}
    if grade:
        meta["points"] = points
    cell.metadata["nbgrader"] = meta
    return cell


def exercise_cells(stem: str, ex: Exercise) -> list:
    """The cells of one exercise: the question, then an autograded or a hand-graded answer."""
    check, gid = CHECKS.get((stem, ex.number)), f"ex{ex.number}"
    ask = f"\n\n*{check.ask}*" if check and check.ask else ""
    cells = [graded(new_markdown_cell(f"**Exercise {ex.number}.** {ex.question}{ask}"),
                    f"{gid}-question", locked=True)]
    if check is None:
        answer = ex.answer + "".join(f"\n\n```python\n{c}\n```" for c in [ex.code] if c)
        return cells + [graded(new_markdown_cell(answer.strip() or "(no model answer)"),
                               f"{gid}-answer", solution=True, grade=True, points=MANUAL_POINTS)]
    if not ex.code:
        raise AssignmentError(f"{stem}: exercise {ex.number} has a hidden test but no python solution")
    body = f"{ex.prompt}### BEGIN SOLUTION\n{ex.code.rstrip()}\n### END SOLUTION\n"
    test = (f"# Hidden tests grade exercise {ex.number} by what your answer computes.\n"
            f"### BEGIN HIDDEN TESTS\n{check.test}### END HIDDEN TESTS\n")
    cells += [graded(new_code_cell(body), f"{gid}-answer", solution=True),
              graded(new_code_cell(test), f"{gid}-tests", grade=True, locked=True, points=check.points)]
    if ex.answer:   # the solution's words answer the question's why and what: graded by hand
        cells += [graded(new_markdown_cell(ex.answer), f"{gid}-explain", solution=True, grade=True,
                         points=MANUAL_POINTS)]
    return cells


def tagged_exercises(nb) -> dict[int, tuple[str, str]]:
    """The cells tagged "exercise", by the exercise number their first comment names:
    (their leading comments, their code)."""
    found = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and EXERCISE_TAG in cell.metadata.get("tags", []):
            prompt, code = split_exercise(cell.source)
            number = TAGGED_NUMBER.search(prompt)
            if not number:
                raise AssignmentError("an exercise cell's first comment does not name its exercise")
            found[int(number.group(1))] = (prompt, code)
    return found


def assignment(nb, stem: str) -> nbformat.NotebookNode:
    """The nbgrader source notebook of the teacher's notebook `nb` (which is left as it is)."""
    tagged = tagged_exercises(nb)
    cells, found = [], []
    for cell in nb.cells:
        parsed = exercises_of(cell.source) if cell.cell_type == "markdown" else None
        if cell.cell_type == "code" and EXERCISE_TAG in cell.metadata.get("tags", []):
            continue
        if parsed is None:
            cells.append(nbformat.from_dict(cell))
            continue
        head, exercises = parsed
        cells += [new_markdown_cell(head)] if head else []
        cells.append(graded(new_markdown_cell("## Exercises"), "exercises", locked=True))
        for ex in exercises:
            if ex.number in tagged:
                ex.prompt, ex.code = tagged.pop(ex.number)
            cells += exercise_cells(stem, ex)
        found += exercises
    unknown = sorted({n for s, n in CHECKS if s == stem} - {e.number for e in found}) + sorted(tagged)
    if not found or unknown:
        raise AssignmentError(f"{stem}: no Exercises with Solutions" if not found
                              else f"{stem}: no exercise numbered {unknown}")
    for cell in cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nbformat.from_dict({**nb, "cells": cells})


@dataclass(frozen=True)
class Assignment:
    """One assignment written: its name and its points, autograded and graded by hand."""

    name: str
    auto_points: int
    manual_points: int


def points(nb) -> tuple[int, int]:
    """(autograded points, hand-graded points) of an nbgrader notebook."""
    metas = [c.metadata["nbgrader"] for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    return (sum(m["points"] for m in metas if not m["solution"]),
            sum(m["points"] for m in metas if m["solution"]))


def write_source(source: str | Path, course: str | Path) -> list[Assignment]:
    """The nbgrader course folder: nbgrader_config.py and source/<stem>/<stem>.ipynb, one
    assignment per numbered notebook in `source`."""
    source, course = Path(source), Path(course)
    paths = sorted(source.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"{source}: no numbered notebooks (NN_name.ipynb) to make assignments of")
    made = []
    for path in paths:
        nb = assignment(nbformat.read(path, as_version=4), path.stem)
        folder = course / "source" / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / path.name, nbformat.writes(nb))
        made.append(Assignment(path.stem, *points(nb)))
    atomic_write(course / "nbgrader_config.py", CONFIG)
    return made


def nbgrader(course: Path, *args: str, env: dict | None = None) -> str:
    """Run one `nbgrader` command in the course folder with this Python; its output, or an
    AssignmentError naming the command and nbgrader's last error line."""
    env = dict(os.environ if env is None else env)
    bin_dir = str(Path(sys.executable).parent)   # nbgrader runs `alembic` from PATH for its database
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    run = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                         capture_output=True, text=True)
    errors = [line for line in run.stderr.splitlines() if "[ERROR]" in line or "Error" in line]
    if run.returncode:
        raise AssignmentError(f"nbgrader {' '.join(args)} failed: {(errors or [run.stderr.strip()])[-1]}")
    return run.stderr + run.stdout


def release(course: str | Path, name: str = "*") -> None:
    """`nbgrader generate_assignment`: release/<name>/ without solutions or hidden tests (every
    assignment by default: one nbgrader run)."""
    nbgrader(Path(course), "generate_assignment", name, "--force")


def autograde(course: str | Path, name: str, student: str, notebook: str | Path,
              env: dict | None = None) -> None:
    """Submit `notebook` as `student`'s answer to assignment `name`, and autograde it."""
    folder = Path(course) / "submitted" / student / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy(notebook, folder / f"{name}.ipynb")
    nbgrader(Path(course), "autograde", name, "--student", student, "--create", "--force", env=env)


def export(course: str | Path) -> dict[tuple[str, str], float]:
    """`nbgrader export` to grades.csv in the course folder: {(assignment, student): score}."""
    nbgrader(Path(course), "export", "--to", "grades.csv")
    with open(Path(course) / "grades.csv", newline="") as f:
        return {(r["assignment"], r["student_id"]): float(r["score"]) for r in csv.DictReader(f)}


def check(course: str | Path, made: list[Assignment], env: dict | None = None) -> list[str]:
    """Autograde each assignment's teacher copy and blank release copy, export the grades, and
    return the problems found (`problems`)."""
    course = Path(course)
    for a in made:
        started = time.perf_counter()
        autograde(course, a.name, TEACHER, course / "source" / a.name / f"{a.name}.ipynb", env)
        autograde(course, a.name, BLANK, course / "release" / a.name / f"{a.name}.ipynb", env)
        print(f"{a.name}: autograded twice in {time.perf_counter() - started:.0f} s", flush=True)
    return problems(made, export(course))


def problems(made: list[Assignment], scores: dict[tuple[str, str], float]) -> list[str]:
    """A line for each teacher's copy short of full marks and each blank copy above 0."""
    found = []
    for a in made:
        got = (scores.get((a.name, TEACHER)), scores.get((a.name, BLANK)))
        if got != (a.auto_points, 0):
            found.append(f"{a.name}: teacher {got[0]} of {a.auto_points} points, blank {got[1]} (expected 0)")
    return found


def check_in_scratch(source: str | Path, course: Path, made: list[Assignment]) -> list[str]:
    """`check` in quick scale in a course folder of its own beside `course` (<course>-check), so
    that the class's gradebook gets no test students."""
    scratch = course.with_name(course.name + "-check")
    shutil.rmtree(scratch, ignore_errors=True)
    write_source(source, scratch)
    release(scratch)
    print(f"autograding in {scratch}", flush=True)
    return check(scratch, made, {**os.environ, "SIMSEARCH_SCALE": "quick"})


def main(argv: list[str]) -> int:
    checking = "--check" in argv
    argv = [a for a in argv if a != "--check"]
    if len(argv) > 2 or any(a.startswith("-") for a in argv):
        print("usage: python -m helpers.assignments [SOURCE_FOLDER] [COURSE_FOLDER] [--check]", file=sys.stderr)
        return 2
    defaults = [REPO_ROOT / "notebooks", REPO_ROOT / "build" / "nbgrader"]
    source, course = argv + defaults[len(argv):]
    try:
        started = time.perf_counter()
        made = write_source(source, course)
        release(course)
        for a in made:
            print(f"{a.name}: {a.auto_points} points autograded, {a.manual_points} graded by hand")
        print(f"{len(made)} assignments in {course} ({time.perf_counter() - started:.0f} s)")
        found = check_in_scratch(source, Path(course), made) if checking else []
    except (FileNotFoundError, AssignmentError, nbformat.reader.NotJSONError) as err:
        print(f"error: {first_line(err)}", file=sys.stderr)
        return 1
    for line in found:
        print(f"error: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
