"""The one goal-line printer every benchmark uses, so that a log can be searched for one format:

    goal: <name> measured <value> target <target> met|missed
    goal: <name> skipped: <reason> target <target>

A target is a bound (`>=5x`, `<=0.05`) or, with `upper`, a range (`0.67-1.5x`, both ends met).

A goal that was measured but could not be reached at all (no setting reached the recall it is
defined at) reads `measured none ... missed`; one that could not be measured here (no GPU, an
engine that would not start) says `skipped:` and why.
"""

from __future__ import annotations


def goal(name: str, measured: float | None, target: float, unit: str = "x",
         higher_is_better: bool = True, skipped: str = "", upper: float | None = None) -> str:
    """Print (and return) one goal line; `skipped` gives the reason a goal could not be measured;
    `upper` makes the target the range `target`-`upper`."""
    if upper is None:
        bound = f"{'>=' if higher_is_better else '<='}{target:g}{unit}"
    else:
        bound = f"{target:g}-{upper:g}{unit}"
    if skipped:
        line = f"goal: {name} skipped: {skipped} target {bound}"
    elif measured is None:
        line = f"goal: {name} measured none target {bound} missed"
    else:
        if upper is not None:
            met = target <= measured <= upper
        else:
            met = measured >= target if higher_is_better else measured <= target
        line = f"goal: {name} measured {measured:.4g}{unit} target {bound} {'met' if met else 'missed'}"
    print(line, flush=True)
    return line
