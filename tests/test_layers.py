"""The package's structure: the layers of helpers/__init__.py hold, and back-links name real notebooks."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import helpers

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "helpers"
LAYER_OF = {module: n for n, layer in enumerate(helpers.LAYERS, 1) for module in layer}


def course_imports(path: Path) -> set[str]:
    """The helpers modules a file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers."):
            found.add(node.module.split(".")[1])
    return {m.split(".")[0] for m in found}


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    listed = set(LAYER_OF)
    assert modules - listed == set(), "add the new module to helpers.LAYERS"
    assert listed - modules == set(), "helpers.LAYERS names a module that is gone"


def test_no_module_imports_from_a_layer_above_it():
    upward = []
    for path in PACKAGE.glob("*.py"):
        if path.stem == "__init__":
            continue
        for imported in course_imports(path):
            if imported in LAYER_OF and LAYER_OF[imported] > LAYER_OF[path.stem]:
                upward.append(f"{path.stem} (layer {LAYER_OF[path.stem]}) imports {imported} (layer {LAYER_OF[imported]})")
    assert not upward, upward


def test_the_checker_sees_an_upward_import(tmp_path):
    """course_imports finds lazy imports too, so an import cycle hidden in a function is caught."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from .gpu import torch_knn\n    from helpers.store import Bundle\n")
    assert course_imports(probe) == {"gpu", "store"}


def test_design_doc_maps_every_module():
    design = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    missing = [m for m in LAYER_OF if f"`{m}`" not in design]
    assert not missing, f"docs/design.md does not describe {missing}"


def test_notebook_back_links_name_existing_notebooks():
    """Code names a notebook by its file (04_ivf), so inserting a notebook breaks no reference."""
    notebooks = {p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    bare, unknown = [], []
    for path in [*PACKAGE.glob("*.py"), *(REPO / "benchmarks").glob("*.py"), *(REPO / "tests").glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        bare += [f"{path.name}: {m.group(0)}" for m in re.finditer(r"\b[Nn]otebooks? \d\d\b(?!_)", text)]
        for link in re.findall(r"[Nn]otebooks? (\d\d_\w+(?:(?:,| to| and) \d\d_\w+)*)", text):
            unknown += [f"{path.name}: {name}" for name in re.findall(r"\d\d_\w+", link) if name not in notebooks]
    assert not bare, f"name notebooks by file: {bare[:5]}"
    assert not unknown, f"no such notebook: {unknown[:5]}"


def test_classes_and_functions_stay_small():
    """No class over 120 lines, no function over 60, outside the command line's argument table."""
    too_long = []
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            limit = {ast.ClassDef: 120, ast.FunctionDef: 60}.get(type(node))
            if limit and node.end_lineno - node.lineno + 1 > limit and (path.stem, node.name) != ("__main__", "_parser"):
                too_long.append(f"{path.stem}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_long, too_long
