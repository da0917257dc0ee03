"""Pictures a learner would rather look at than read: image grids and result rows."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
from PIL import Image

from .images import ImageLoadError, open_rgb
from .manifest import Manifest


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
    """Show images (paths or PIL images) in a grid; unreadable ones appear as a labelled gap."""
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
    """One row per label with its first few images."""
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
    """One row per query: the query image, then its neighbours with id and score.

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
