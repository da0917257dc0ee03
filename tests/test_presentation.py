"""Figures everyone can read: alternative text read from what a figure draws, an opaque background."""

import base64
import html
import io
import re

import matplotlib
import numpy as np
import pytest
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from helpers import presentation as show  # noqa: E402

ROWS = [{"index": "IVF64", "nprobe": n, "recall@10": r, "QPS": q} for n, r, q in [(1, 0.52, 5100), (8, 0.91, 2050), (64, 1.0, 310)]]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_a_recall_plot_says_its_axes_series_and_target():
    ax = show.plot_recall_qps(ROWS, label="nprobe", target=0.95, title="IVF on this machine")
    alt = show.describe(ax.figure)
    assert alt.startswith("chart 'IVF on this machine': x axis recall@10; y axis QPS (log scale);")
    assert "IVF64: 3 points, x 0.520 to 1.000, y 310 to 5,100" in alt
    assert "a vertical line at x = 0.950" in alt


def test_named_bars_say_each_height_and_long_lists_are_cut():
    fig, ax = plt.subplots()
    ax.bar(["kept", "skipped"], [40, 3])
    assert "bars kept 40.0, skipped 3.000" in show.describe(fig)
    fig, ax = plt.subplots()
    for i in range(show.MAX_ITEMS + 3):
        ax.plot([0, 1], [i, i], label=f"s{i}")
    assert show.describe(fig).endswith("; and 3 more")


def test_error_bars_are_described_by_their_line_and_an_unknown_artist_still_shows(monkeypatch):
    fig, ax = plt.subplots()
    ax.errorbar([1, 2, 3], [0.5, 0.7, 0.9], yerr=0.05, label="recall")
    assert "recall: 3 points, x 1.000 to 3.000, y 0.500 to 0.900" in show.describe(fig)
    monkeypatch.setattr(show, "_series", lambda ax: 1 / 0)
    assert 'alt="a figure"' in show.figure_html(fig)


def test_an_image_grid_names_every_tile_and_an_unreadable_one(tmp_path):
    good = tmp_path / "cat.png"
    Image.new("RGB", (20, 20), "red").save(good)
    fig = show.image_grid([good, tmp_path / "missing.png"], ["query 3\ncat", "id 9\ndog"], suptitle="Results")
    assert show.describe(fig) == "Results. 2 image tiles: image: query 3 cat; id 9 dog unreadable"


def test_figure_html_is_an_img_with_the_alt_text_on_an_opaque_white_background():
    fig, ax = plt.subplots()
    fig.patch.set_alpha(0)               # as Jupyter's inline backend draws figures: transparent
    ax.plot([0, 1], [1, 0], label="drop")
    ax.legend()
    tag = show.figure_html(fig)
    m = re.fullmatch(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)" style="max-width:100%"/>', tag)
    assert m and html.unescape(m.group(2)) == show.describe(fig)
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(m.group(1)))).convert("RGBA"))
    assert (png[0, 0] == [255, 255, 255, 255]).all() and (png[-1, -1] == [255, 255, 255, 255]).all()


def test_in_ipython_every_figure_is_also_shown_as_that_img():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        show._show_figures_with_alt_text()
        fig, ax = plt.subplots()
        ax.scatter([1, 2, 3], [3, 2, 1], label="ids")
        data, _ = shell.display_formatter.format(fig)
        assert 'alt="chart: x axis unlabelled; y axis unlabelled; ids: 3 points' in data["text/html"]
    finally:
        InteractiveShell.clear_instance()
