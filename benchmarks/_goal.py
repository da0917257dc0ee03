"""The one goal-line printer every benchmark uses: `goal: <name> measured <value><unit> target >=<t><unit> met|missed`."""

from __future__ import annotations


def goal(name: str, measured: float, target: float, unit: str = "x", higher_is_better: bool = True) -> str:
    """Print and return one goal line; `higher_is_better=False` for a ceiling (`target <=...`)."""
    met = measured >= target if higher_is_better else measured <= target
    line = (f"goal: {name} measured {measured:.3g}{unit} target {'>=' if higher_is_better else '<='}"
            f"{target:g}{unit} {'met' if met else 'missed'}")
    print(line)
    return line
