"""The one goal-line printer every benchmark uses, in the README's format:

    goal: <name> measured <value><unit> target >=<target><unit> met|missed

(`<=` when lower is better). A goal that could not be measured (e.g. no setting reached the
recall it is defined at) reads `measured none ... missed`.
"""

from __future__ import annotations


def goal(name: str, measured: float | None, target: float, unit: str = "x",
         higher_is_better: bool = True) -> str:
    """Print and return one goal line; `measured` None counts as missed."""
    shown = "none" if measured is None else f"{measured:.3g}{unit}"
    if measured is None:
        met = False
    else:
        met = measured >= target if higher_is_better else measured <= target
    line = (f"goal: {name} measured {shown} target {'>=' if higher_is_better else '<='}{target:g}{unit} "
            f"{'met' if met else 'missed'}")
    print(line, flush=True)
    return line
