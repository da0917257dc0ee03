"""The one goal-line printer every benchmark uses, so that a log can be searched for one format:

    goal: <name> measured <value> target <target> met|missed
    goal: <name> skipped: <reason> target <target>
"""

from __future__ import annotations


def goal(name: str, measured: float | None, target: float, unit: str = "x",
         higher_is_better: bool = True, skipped: str = "") -> str:
    """Print (and return) one goal line; `skipped` gives the reason a goal could not be measured."""
    bound = f"{'>=' if higher_is_better else '<='}{target:g}{unit}"
    if skipped or measured is None:
        line = f"goal: {name} skipped: {skipped or 'not measured'} target {bound}"
    else:
        met = measured >= target if higher_is_better else measured <= target
        line = f"goal: {name} measured {measured:.4g}{unit} target {bound} {'met' if met else 'missed'}"
    print(line, flush=True)
    return line
