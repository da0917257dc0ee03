"""What a learner looks at: tables of measurements, plots, image grids.

Plotting and table code only; nothing here is part of a lesson.
- `Table`: rows of measurements, shown as HTML in a notebook; `Comparison`: the side-by-side
  table of every index the notebooks measured, kept in a JSON file.
- `plot_recall_qps`, `image_grid`, `samples_per_label`, `result_rows`: pictures.
- `describe`: alternative text read from what a figure draws. In a notebook every matplotlib
  figure (the course's and a notebook's own) is also shown as an `<img>` carrying that text on an
  opaque white background (`figure_html`), so a screen reader has words for it and a dark theme
  cannot hide its black labels.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.collections import PathCollection
from matplotlib.container import BarContainer, ErrorbarContainer
import numpy as np
from PIL import Image

from .fileio import atomic_write
from .images import ImageLoadError, open_rgb
from .manifest import Manifest


# ---------------------------------------------------------------- tables

def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        a = abs(value)
        return f"{value:,.0f}" if a >= 100 else f"{value:.1f}" if a >= 10 else f"{value:.3f}"
    return "" if value is None else str(value)


class Table:
    """Rows of measurements (dicts) shown as a table: in a notebook as HTML, elsewhere `to_text()`
    (every notebook)."""

    def __init__(self, rows: Iterable[dict] = (), title: str = ""):
        self.rows = list(rows)
        self.title = title

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(c for row in self.rows for c in row))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]

    def append(self, row: dict) -> None:
        self.rows.append(row)

    def column(self, name: str) -> list:
        return [row.get(name) for row in self.rows]

    def first(self, condition: Callable[[dict], bool]) -> dict | None:
        """The first row meeting `condition`, e.g. `lambda r: r["recall@10"] >= 0.95`; None if none does."""
        return next((row for row in self.rows if condition(row)), None)

    def to_text(self) -> str:
        cols = self.columns
        cells = [cols] + [[_fmt(row.get(c)) for c in cols] for row in self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
        lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(([self.title] if self.title else []) + lines)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        cols = self.columns
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(row.get(c)))}</td>" for c in cols) + "</tr>"
                       for row in self.rows)
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return f"<table>{caption}<tr>{head}</tr>{body}</table>"


class Comparison:
    """The side-by-side table of every index measured so far, kept in a JSON file.

    Each notebook replaces its own rows (`update`) and shows them all (`table`), so notebook 06_hnsw
    ends with the indexes of 03-06 side by side, each measured when its notebook last ran.
    """

    COLUMNS = ("index", "recall@10", "1-recall@1", "QPS", "QPS 1-by-1", "memory MB", "train s", "add s")

    def __init__(self, path):
        self.path = Path(path)

    def _load(self) -> dict[str, list[dict]]:
        if not self.path.is_file():
            return {}
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return {}   # a damaged table is rebuilt by the notebooks, not fatal

    def update(self, notebook: str, rows: Iterable[dict]) -> None:
        data = self._load()
        data[notebook] = [{c: row.get(c) for c in self.COLUMNS} for row in rows]
        atomic_write(self.path, json.dumps(data, indent=1, default=float))

    def table(self) -> "Table":
        data = self._load()
        rows = [{"notebook": nb, **row} for nb in sorted(data) for row in data[nb]]
        return Table(rows, "All indexes so far (recall@10 against exact search; QPS for one batch, "
                           "and for queries sent one at a time)")


# ---------------------------------------------------------------- plots

def plot_recall_qps(table: Iterable[dict], *, recall: str = "recall@10", qps: str = "QPS", by: str = "index",
                    label: str | None = None, target: float | None = None, ax=None, title: str | None = None,
                    front: Iterable[dict] | None = None):
    """Queries per second (log scale) against recall, one line per value of the `by` column
    (notebooks 04_ivf to 06_hnsw, 08_tuning).

    label: a column (e.g. "nprobe", "efSearch") written beside each point; target: a recall to
    mark with a vertical line; front: rows to join with a thick line, e.g. the Pareto front
    (helpers.tuning.pareto_front, notebook 08_tuning). Up and to the right is better. Returns the Axes.
    """
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
    if front is not None:
        front = sorted(front, key=lambda row: row[recall])
        ax.plot([row[recall] for row in front], [row[qps] for row in front], "-", color="black", linewidth=2.5,
                alpha=0.4, label="Pareto front")
    if target is not None:
        ax.axvline(target, color="grey", linestyle="--", linewidth=1, label=f"{recall} = {target}")
    ax.set_yscale("log")
    ax.set_xlabel(recall)
    ax.set_ylabel(f"{qps} (log scale)")
    ax.set_title(title or getattr(table, "title", "") or f"{qps} against {recall}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return ax


# ---------------------------------------------------------------- images

def _thumb(item: str | Path | Image.Image, size: int = 160) -> Image.Image | None:
    if isinstance(item, Image.Image):
        img = item
    else:
        try:
            img = open_rgb(item)
        except ImageLoadError:
            return None
    img = img.copy()
    img.thumbnail((size, size))
    return img


def image_grid(items: Sequence[str | Path | Image.Image], titles: Sequence[str] | None = None,
               ncols: int = 6, cell: float = 1.8, suptitle: str | None = None) -> plt.Figure:
    """Show images (paths or PIL images) in a grid; unreadable ones appear as a labelled gap (notebooks 01_data_manifest, 02_features)."""
    n = max(1, len(items))
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, cell * nrows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, item in enumerate(items):
        ax = axes.flat[i]
        thumb = _thumb(item)
        if thumb is None:
            ax.text(0.5, 0.5, "unreadable", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.imshow(thumb)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def samples_per_label(manifest: Manifest, per_label: int = 4, max_labels: int = 20) -> plt.Figure:
    """One row per label with its first few images (notebook 01_data_manifest)."""
    labels = list(manifest.label_counts())[:max_labels]
    items, titles = [], []
    for label in labels:
        chosen = [e for e in manifest if e.label == label][:per_label]
        chosen += [None] * (per_label - len(chosen))
        for e in chosen:
            items.append(Image.new("RGB", (8, 8), "white") if e is None else manifest.abspath(e))
            titles.append("" if e is None else f"{label}\n{Path(e.path).name}")
    return image_grid(items, titles, ncols=per_label)


def result_rows(manifest: Manifest, query_ids: Sequence[int], result_ids, scores,
                score_name: str = "distance") -> plt.Figure:
    """One row per query: the query image, then its neighbours with id and score (notebooks 02_features, 03_flat_index).

    Ids that are not in the manifest (synthetic distractors) show as grey tiles."""
    k = len(result_ids[0])
    items, titles = [], []
    for q, ids, sc in zip(query_ids, result_ids, scores):
        items.append(manifest.abspath(int(q)))
        titles.append(f"query {int(q)}\n{manifest.entry(q).label}")
        for i, s in zip(ids, sc):
            if int(i) < 0:
                items.append(Image.new("RGB", (8, 8), "white"))
                titles.append("no result")
            elif int(i) not in manifest:   # a synthetic distractor: a vector with no image
                items.append(Image.new("RGB", (8, 8), "lightgrey"))
                titles.append(f"distractor\n{score_name} {float(s):.3f}")
            else:
                items.append(manifest.abspath(int(i)))
                titles.append(f"id {int(i)} {manifest.entry(i).label}\n{score_name} {float(s):.3f}")
    return image_grid(items, titles, ncols=k + 1)


# ---------------------------------------------------------------- alternative text

MAX_ITEMS = 12   # series or tiles listed in a figure's alternative text before "and N more"


def _span(values) -> str:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return "no values"
    lo, hi = values.min(), values.max()
    return _fmt(lo) if lo == hi else f"{_fmt(lo)} to {_fmt(hi)}"


def _listed(items: list[str]) -> str:
    more = len(items) - MAX_ITEMS
    return "; ".join(items[:MAX_ITEMS]) + (f"; and {more} more" if more > 0 else "")


def _series(ax) -> list[str]:
    """Each drawn series of a chart: lines (axvline/axhline as one value), scatters, bars."""
    found = []
    errorbar_label = {c.lines[0]: c.get_label() for c in ax.containers if isinstance(c, ErrorbarContainer)}
    for line in ax.get_lines():
        label = errorbar_label.get(line, line.get_label())
        name = label if not label.startswith("_") else "a line"
        x, y = line.get_xdata(), line.get_ydata()
        if line.get_transform() == ax.get_xaxis_transform():
            found.append(f"{name}: a vertical line at x = {_fmt(float(x[0]))}")
        elif line.get_transform() == ax.get_yaxis_transform():
            found.append(f"{name}: a horizontal line at y = {_fmt(float(y[0]))}")
        else:
            found.append(f"{name}: {len(x)} points, x {_span(x)}, y {_span(y)}")
    for points in (c for c in ax.collections if isinstance(c, PathCollection)):   # scatters
        xy = np.asarray(points.get_offsets(), dtype=float).reshape(-1, 2)
        if len(xy):
            name = points.get_label() if not points.get_label().startswith("_") else "points"
            found.append(f"{name}: {len(xy)} points, x {_span(xy[:, 0])}, y {_span(xy[:, 1])}")
    names = [t.get_text() for t in ax.get_xticklabels()]
    for bars in ax.containers:
        if not isinstance(bars, BarContainer):     # error bars: described with their line above
            continue
        heights = [p.get_height() for p in bars.patches]
        if len(names) == len(heights) and all(names):   # named bars: each name with its height
            found.append("bars " + _listed([f"{n} {_fmt(float(h))}" for n, h in zip(names, heights)]).replace("; ", ", "))
        else:
            found.append(f"{len(heights)} bars, heights {_span(heights)}")
    return found


def _chart(ax) -> str:
    def axis(name, label, scale):
        return f"{name} axis {label or 'unlabelled'}" + (" (log scale)" if scale == "log" and "log" not in label else "")

    title = ax.get_title()
    return (f"chart{f' {title!r}' if title else ''}: {axis('x', ax.get_xlabel(), ax.get_xscale())}; "
            f"{axis('y', ax.get_ylabel(), ax.get_yscale())}; {_listed(_series(ax)) or 'nothing drawn'}")


def describe(fig) -> str:
    """Alternative text for a figure, read from what it draws: its title; each chart's axes
    (label, log scale) and series (points, x and y ranges; named bars' heights); each image
    tile's title."""
    charts, tiles = [], []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        if ax.axison and (ax.lines or ax.collections or ax.containers or ax.patches):
            charts.append(_chart(ax))
        elif ax.images or ax.texts:
            words = " ".join(filter(None, [ax.get_title(), *(t.get_text() for t in ax.texts)])) or "untitled"
            tiles.append(("image: " if ax.images else "") + " ".join(words.split()))
    parts = [fig.get_suptitle()] if fig.get_suptitle() else []
    parts += charts
    if tiles:
        parts.append(f"{len(tiles)} image tiles: {_listed(tiles)}")
    return ". ".join(parts) or "an empty figure"


def figure_html(fig) -> str:
    """The figure as an `<img>` with `describe`'s alternative text, on an opaque white background."""
    buffer, alpha = io.BytesIO(), fig.patch.get_alpha()
    fig.patch.set_alpha(1)        # Jupyter's inline backend makes figures transparent
    try:
        fig.savefig(buffer, format="png", bbox_inches="tight", facecolor="white")
    finally:
        fig.patch.set_alpha(alpha)
    data = base64.b64encode(buffer.getvalue()).decode()
    try:
        alt = describe(fig)
    except Exception:   # a kind of plot describe does not know must still be shown
        alt = "a figure"
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" style="max-width:100%"/>'


def _show_figures_with_alt_text() -> None:
    """In IPython, display every matplotlib figure through `figure_html` as well (front ends
    prefer HTML to the PNG the inline backend adds)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        # the inline backend, activated when pyplot first loads it, drops every formatter registered
        # for Figure (IPython's select_figure_formats): load it first
        plt.switch_backend(matplotlib.get_backend())
        shell.display_formatter.formatters["text/html"].for_type(plt.Figure, figure_html)


_show_figures_with_alt_text()
