"""benchmarks/_goal.py: the one goal-line format the README documents."""

import re

import pytest

from benchmarks._goal import goal

LINE = re.compile(r"^goal: \S+ measured (none|[0-9.e+-]+\S*) target ((>=|<=)[0-9.e+-]+|[0-9.e+]+-[0-9.e+]+)\S* (met|missed)$")


@pytest.mark.parametrize("measured, target, higher, verdict", [
    (5.2, 5, True, "met"), (4.9, 5, True, "missed"), (None, 5, True, "missed"),
    (0.8, 1.0, False, "met"), (1.2, 1.0, False, "missed"),
])
def test_goal_line_format_and_verdict(capsys, measured, target, higher, verdict):
    line = goal("ivf_qps_over_flat", measured, target, "x", higher_is_better=higher)
    assert capsys.readouterr().out == line + "\n" and LINE.match(line), line
    assert line.endswith(verdict) and f"target {'>=' if higher else '<='}{target:g}x" in line


def test_unitless_goal():
    assert goal("recall", 0.878, 0.85, unit="") == "goal: recall measured 0.878 target >=0.85 met"


def test_a_goal_that_could_not_be_measured_says_why():
    line = goal("ivf_gpu", None, 5, skipped="no Faiss GPU build")
    assert line == "goal: ivf_gpu skipped: no Faiss GPU build target >=5x"


@pytest.mark.parametrize("measured, verdict", [(0.66, "missed"), (0.67, "met"), (1.2, "met"), (1.5, "met"), (1.51, "missed")])
def test_a_range_target_needs_both_ends(measured, verdict):
    line = goal("directions_ratio", measured, 0.67, "x", upper=1.5)
    assert LINE.match(line) and line.endswith(verdict) and "target 0.67-1.5x" in line, line
