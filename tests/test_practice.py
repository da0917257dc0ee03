"""`make practice`: learner copies with the solutions out and the exercise cells blanked."""

from __future__ import annotations

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from helpers.practice import NOTE, PROMPT, blank_exercise, learner_copy, main, write_practice
from helpers.settings import REPO_ROOT

LESSON = "## Exercises\n\n1. Double nlist.\n\n<details><summary>Solutions</summary>\n\n1. `nlist *= 2`\n</details>\n"


def teacher_notebook() -> nbformat.NotebookNode:
    exercise = new_code_cell("# Exercise 1: double nlist.\n# Then rebuild.\nnlist *= 2\nprint(nlist)",
                             metadata={"tags": ["exercise"]})
    lesson = new_code_cell("x = 1", outputs=[new_output("stream", text="1\n")], execution_count=3)
    return new_notebook(cells=[new_markdown_cell("# Title\nno solutions here"), lesson,
                               new_markdown_cell(LESSON), exercise])


def test_learner_copy_removes_solutions_and_blanks_exercises():
    teacher = teacher_notebook()
    copy, removed, blanked = learner_copy(teacher)
    assert (removed, blanked) == (1, 1)
    assert copy.cells[2].source == "## Exercises\n\n1. Double nlist.\n\n" + NOTE + "\n"
    assert "nlist *= 2" not in copy.cells[3].source
    assert copy.cells[3].source == "# Exercise 1: double nlist.\n# Then rebuild.\n" + PROMPT
    assert copy.cells[1].source == "x = 1" and copy.cells[1].outputs == [], "lessons stay, outputs go"
    assert copy.cells[0].source == teacher.cells[0].source
    assert "nlist *= 2" in teacher.cells[3].source and teacher.cells[1].outputs, "the teacher's copy is untouched"


def test_exercise_without_a_comment_becomes_the_prompt():
    assert blank_exercise("a = 1\n# not a heading") == PROMPT
    assert blank_exercise("# only a question") == "# only a question\n" + PROMPT


def test_write_practice_copies_every_numbered_notebook(tmp_path):
    src = tmp_path / "nb"
    src.mkdir()
    nbformat.write(teacher_notebook(), src / "01_a.ipynb")
    nbformat.write(new_notebook(cells=[new_markdown_cell("plain")]), src / "02_b.ipynb")
    nbformat.write(teacher_notebook(), src / "scratch.ipynb")
    copies = write_practice(src, tmp_path / "out")
    assert [c.path.name for c in copies] == ["01_a.ipynb", "02_b.ipynb"]
    assert [(c.solutions_removed, c.cells_blanked) for c in copies] == [(1, 1), (0, 0)]
    nbformat.validate(nbformat.read(copies[0].path, as_version=4))


def test_the_course_has_solutions_to_remove_and_notebook_10_an_exercise_cell(tmp_path):
    copies = {c.path.stem: c for c in write_practice(REPO_ROOT / "notebooks", tmp_path)}
    assert copies["10_search_explorer"].cells_blanked >= 1
    assert all(c.solutions_removed >= 1 for c in copies.values()), "every notebook ends with solutions"
    for c in copies.values():
        assert "<summary>Solutions" not in c.path.read_text(encoding="utf-8")


def test_command_line_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path), str(tmp_path / "out")]) == 1
    assert "no numbered notebooks" in capsys.readouterr().err
    assert main(["a", "b", "c"]) == 2
