"""The course website (helpers.site): pages with their outputs, offline, every link resolving."""

import json
import shutil

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from helpers import presentation as show  # noqa: E402
from helpers import site  # noqa: E402
from helpers.settings import REPO_ROOT  # noqa: E402


def executed_copy(folder):
    """The twelve notebooks as make run leaves them; 04_ivf with outputs of each kind the course
    prints: a figure (the <img> with alt text and the PNG), a widget view, a stream."""
    folder.mkdir()
    for path in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        shutil.copy(path, folder)
    fig, ax = plt.subplots()
    ax.plot([0.5, 0.9, 1.0], [5000, 2000, 300], label="IVF")
    figure = {"output_type": "display_data", "metadata": {},
              "data": {"text/html": show.figure_html(fig), "image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}}
    widget = {"output_type": "display_data", "metadata": {},
              "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2,
                                                                     "version_minor": 0},
                       "text/plain": "progress bar (a widget)"}}
    stream = {"output_type": "stream", "name": "stdout", "text": "recall@10 0.9\n"}
    nb_path = folder / "04_ivf.ipynb"
    nb = json.loads(nb_path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    code[1]["outputs"], code[2]["outputs"] = [figure, widget], [stream]
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {   # as nbclient saves it
        "state": {"abc": {"model_name": "IntProgressModel", "state": {"value": 3}}}, "version_major": 2, "version_minor": 0}}
    nb_path.write_text(json.dumps(nb))
    return folder, show.describe(fig)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    executed, alt = executed_copy(root / "executed")
    return site.build_site(executed, root / "out"), alt


def test_twelve_pages_and_an_index_linking_each(built):
    html, _ = built
    pages = sorted(p.stem for p in html.glob("[0-9][0-9]_*.html"))
    assert len(pages) == 12 == len(list((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    index = (html / "index.html").read_text()
    assert all(f'href="{stem}.html"' in index for stem in pages), "the course map links every notebook"


def test_every_link_resolves_and_nothing_is_fetched_from_elsewhere(built):
    html, _ = built
    assert site.broken_links(html) == []
    assert site.external_references(html) == []


def test_outputs_render_figures_with_alt_text_and_widgets_as_text(built):
    html, alt = built
    page = (html / "04_ivf.html").read_text()
    assert f'alt="{alt}"'.replace("'", "&#x27;") in page
    assert "progress bar (a widget)" in page and "recall@10 0.9" in page
    assert "widget-state+json" not in page, "no widget state: nothing on the page could use it"


def test_the_checks_find_a_fetched_script_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "a.html").write_text('<html><head><script src="https://cdn.example/x.js"></script></head>'
                                     '<body><a href="b.html#nowhere">b</a><img src="gone.png" alt="x">'
                                     '<a href="a.html#here" id="here">self</a></body></html>')
    (tmp_path / "b.html").write_text('<html><body><p id="somewhere">b</p></body></html>')
    (tmp_path / "style.css").write_text('@import "https://fonts.example/f.css"; p { background: url(//img.example/i.png) }')
    assert site.external_references(tmp_path) == ["a.html: https://cdn.example/x.js", "style.css: https://fonts.example/f.css",
                                                  "style.css: //img.example/i.png"]
    assert site.broken_links(tmp_path) == ["a.html: b.html#nowhere (no such anchor)", "a.html: gone.png"]


def test_no_executed_notebooks_is_a_one_line_error(tmp_path, capsys):
    assert site.main([str(tmp_path), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run `make run`" in err
