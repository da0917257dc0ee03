"""`make assignments`: nbgrader assignments from the teacher's notebooks, without solutions in
release, that autograde the teacher's answers to full marks and a blank copy to 0."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from helpers import assignments as A
from helpers.settings import REPO_ROOT

LESSON = """## Key takeaways

- one

## Exercises

1. Count the cells. Why so many?
2. Double `x`.

<details><summary>Solutions</summary>

1. Count them:
   ```python
   print(42)
   ```
2. Multiply:
   ```python
   doubled = 2 * x
   ```
</details>
"""
CHEAP = ("00_welcome",)   # autograded in `make test`: the quickest notebook (`make assignments CHECK=1`: all)


def teacher_notebook():
    return new_notebook(cells=[new_code_cell("x = 21"), new_markdown_cell(LESSON)])


def metas(nb):
    return [c.metadata.get("nbgrader", {}) for c in nb.cells]


def test_an_exercise_becomes_question_answer_and_hidden_test(monkeypatch):
    monkeypatch.setitem(A.CHECKS, ("99_toy", 2), A.Check("assert doubled == 2 * x\n", "Keep it in `doubled`."))
    nb = A.assignment(teacher_notebook(), "99_toy")
    ids = [m.get("grade_id") for m in metas(nb)]
    assert ids == [None, None, "exercises", "ex1-question", "ex1-answer", "ex2-question", "ex2-answer", "ex2-tests",
                   "ex2-explain"]
    manual, auto, test = nb.cells[4], nb.cells[6], nb.cells[7]
    assert manual.cell_type == "markdown" and manual.metadata.nbgrader["grade"] and "print(42)" in manual.source
    assert "### BEGIN SOLUTION\ndoubled = 2 * x\n### END SOLUTION" in auto.source
    assert nb.cells[8].source == "Multiply:" and nb.cells[8].metadata.nbgrader["solution"], "the why: by hand"
    assert test.metadata.nbgrader["points"] == 2 and test.metadata.nbgrader["locked"]
    assert "### BEGIN HIDDEN TESTS\nassert doubled == 2 * x\n### END HIDDEN TESTS" in test.source
    assert "Keep it in `doubled`." in nb.cells[5].source and "<details>" not in nb.cells[1].source


def test_mismatched_exercises_and_stale_checks_are_errors(monkeypatch):
    broken = teacher_notebook()
    broken.cells[1].source = LESSON.replace("2. Multiply", "3. Multiply")
    with pytest.raises(A.AssignmentError, match="differ"):
        A.assignment(broken, "99_toy")
    monkeypatch.setitem(A.CHECKS, ("99_toy", 7), A.Check("assert True\n"))
    with pytest.raises(A.AssignmentError, match="no exercise numbered"):
        A.assignment(teacher_notebook(), "99_toy")


def test_command_line_errors_are_one_line(tmp_path, capsys):
    assert A.main([str(tmp_path), str(tmp_path / "course")]) == 1
    err = capsys.readouterr().err
    assert "no numbered notebooks" in err and len(err.strip().splitlines()) == 1
    assert A.main(["a", "b", "c"]) == 2 and A.main(["--bad"]) == 2


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The course's assignments, source and release, in a fresh course folder."""
    folder = tmp_path_factory.mktemp("nbgrader")
    made = A.write_source(REPO_ROOT / "notebooks", folder)
    A.release(folder)
    return folder, made


def solution_lines(teacher) -> set[str]:
    """Lines of the teacher's solutions that appear nowhere in the lessons."""
    lesson = {line.strip() for c in teacher.cells if "exercise" not in c.metadata.get("tags", [])
              for line in A.SOLUTIONS.sub("", c.source).splitlines()}
    answers = {line.strip() for c in teacher.cells for m in A.SOLUTIONS.finditer(c.source)
               for line in m.group(0).splitlines()}
    answers |= {line.strip() for c in teacher.cells if "exercise" in c.metadata.get("tags", [])
                for line in A.split_exercise(c.source)[1].splitlines()}
    return {line for line in answers - lesson if len(line) > 3 and line not in ("</details>",)}


def test_every_notebook_is_an_assignment_whose_release_has_no_solution(course):
    folder, made = course
    stems = sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [a.name for a in made] == stems
    for name in stems:
        teacher = nbformat.read(REPO_ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        text = (folder / "release" / name / f"{name}.ipynb").read_text(encoding="utf-8")
        released = nbformat.reads(text, as_version=4)
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
        leaked = {line for c in released.cells for line in c.source.splitlines()} & solution_lines(teacher)
        assert not leaked, f"{name}: solution lines in the release copy: {sorted(leaked)[:3]}"
        source = nbformat.read(folder / "source" / name / f"{name}.ipynb", as_version=4)
        teacher_lines = {line.strip() for c in teacher.cells for line in c.source.splitlines()}
        for check in (c for (stem, _), c in A.CHECKS.items() if stem == name):
            hidden = {line.strip() for line in check.test.splitlines()} - teacher_lines - {""}
            assert hidden and all(line in source_text(source) for line in hidden)
            assert not any(line in text for line in hidden), f"{name}: a hidden test line in release"
        answers = {m["grade_id"][:-7] for m in metas(released) if m.get("grade_id", "").endswith("-answer")}
        tests = {m["grade_id"][:-6]: m["points"] for m in metas(released) if m.get("grade_id", "").endswith("-tests")}
        auto = {f"ex{n}" for stem, n in A.CHECKS if stem == name}
        assert set(tests) == auto and all(p > 0 for p in tests.values()), f"{name}: a test cell with points each"
        numbers = {e.number for c in teacher.cells if c.cell_type == "markdown"
                   for e in (A.exercises_of(c.source) or ("", []))[1]}
        assert numbers and answers == {f"ex{n}" for n in numbers}, f"{name}: every exercise has an answer cell"


def source_text(nb) -> str:
    return "\n".join(c.source for c in nb.cells)


def test_teacher_autogrades_to_full_marks_blank_to_zero_and_grades_export(course, tmp_path):
    """Runs the cheapest notebook twice (teacher, blank), on a data folder of its own."""
    folder, made = course
    env = {**os.environ, "SIMSEARCH_SCALE": "quick", "SIMSEARCH_DATA_DIR": str(tmp_path / "data")}
    cheap = [a for a in made if a.name in CHEAP]
    assert [a.name for a in cheap] == list(CHEAP) and all(a.auto_points > 0 for a in cheap)
    assert A.check(folder, cheap, env) == []
    scores = A.export(folder)
    for a in cheap:
        assert scores[(a.name, A.TEACHER)] == a.auto_points and scores[(a.name, A.BLANK)] == 0
    assert (folder / "grades.csv").read_text().startswith("assignment,")


def test_problems_names_a_teacher_short_of_full_marks_and_a_blank_above_zero():
    made = [A.Assignment("00_a", 4, 1), A.Assignment("01_b", 2, 0)]
    full = {("00_a", A.TEACHER): 4.0, ("00_a", A.BLANK): 0.0, ("01_b", A.TEACHER): 2.0, ("01_b", A.BLANK): 0.0}
    assert A.problems(made, full) == []
    short = {**full, ("00_a", A.TEACHER): 2.0, ("01_b", A.BLANK): 2.0}
    assert A.problems(made, short) == ["00_a: teacher 2.0 of 4 points, blank 0.0 (expected 0)",
                                       "01_b: teacher 2.0 of 2 points, blank 2.0 (expected 0)"]
    assert A.problems(made, {}) != [], "an assignment not graded at all is a problem"
