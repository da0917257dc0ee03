"""Plots of measurements (matplotlib); plotting code only, nothing here is part of the lesson."""

from __future__ import annotations

from typing import Iterable


def plot_recall_qps(table: Iterable[dict], *, recall: str = "recall@10", qps: str = "QPS", by: str = "index",
                    label: str | None = None, target: float | None = None, ax=None, title: str | None = None):
    """Queries per second (log scale) against recall, one line per value of the `by` column.

    label: a column (e.g. "nprobe", "efSearch") written beside each point; target: a recall to
    mark with a vertical line. Up and to the right is better. Returns the matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    rows = list(table)
    if not rows:
        raise ValueError("nothing to plot: the table has no rows")
    missing = {recall, qps} - set(rows[0])
    if missing:
        raise KeyError(f"the table has no column {sorted(missing)}; its columns are {list(rows[0])}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for group in dict.fromkeys(row.get(by) for row in rows):
        part = sorted((row for row in rows if row.get(by) == group), key=lambda row: row[recall])
        ax.plot([row[recall] for row in part], [row[qps] for row in part], "o-", label=str(group))
        for row in part if label else ():
            if row.get(label) is not None:
                ax.annotate(str(row[label]), (row[recall], row[qps]), textcoords="offset points",
                            xytext=(4, 4), fontsize=8)
    if target is not None:
        ax.axvline(target, color="grey", linestyle="--", linewidth=1, label=f"{recall} = {target}")
    ax.set_yscale("log")
    ax.set_xlabel(recall)
    ax.set_ylabel(f"{qps} (log scale)")
    ax.set_title(title or getattr(table, "title", "") or f"{qps} against {recall}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return ax
