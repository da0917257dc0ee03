"""The search explorer of notebook 10_search_explorer: an ipywidgets app to query the course's indexes by hand.

Pick a query (a held-out sample image from the gallery, or your own photo uploaded), an index,
k, and the index's search knob (nprobe for IVF, efSearch for HNSW); the app searches one query
the way a product would and shows the results with their cosine scores, the search latency, and
this query's recall@k against exact search, updated as soon as a control moves.

The indexes are the notebook's own (built in its cells) or any other `name -> faiss index`
(a bundle loaded from disk); they hold L2-normalised vectors searched by inner product, the
course's cosine metric, and the app normalises every query the same way. Everything the app
shows is in its widgets and in `app.shown`, so tests drive it without a browser: build it, set
widget values, read what it renders.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import faiss
import ipywidgets as widgets
import numpy as np
from PIL import Image

from .backbones import Backbone
from .evaluate import median_seconds, recall_at_k
from . import indexes
from .indexes import normalize
from .features import extract
from .fileio import first_line
from .images import MAX_PIXELS, open_rgb
from .manifest import Manifest, scan

#: Uploads above this many bytes are refused in the app. A Jupyter server drops any websocket
#: message above 10 MiB (tornado's default) before the kernel sees it, so keep below that.
MAX_UPLOAD_BYTES = 8 * 2**20
THUMB = 112           # pixels, the long side of a result or gallery thumbnail
QUERY_THUMB = 176     # pixels, the long side of the query image
EF_SEARCH_MAX = 512   # the efSearch slider's top; nprobe's is the index's nlist


class UploadError(ValueError):
    """An uploaded file the app cannot search with; the message is one line saying why."""


@dataclass(frozen=True)
class Knob:
    """An index's search-time parameter: its Faiss name, the slider's range, its current value."""

    name: str
    low: int
    high: int
    value: int


@dataclass(frozen=True)
class Shown:
    """What the app shows after a search (tests and notebook 10_search_explorer's checks read it)."""

    index: str
    k: int
    knob: str                 # e.g. "nprobe=8", or "" for an index without one
    ids: np.ndarray           # (k,) int64, -1 where the index returned fewer than k
    scores: np.ndarray        # (k,) cosine similarities
    seconds: float            # median of 3 timed searches of this one query
    recall: float | None      # recall@k against exact search; None when the index holds other vectors
    exact_ids: np.ndarray     # (k,) exact search's top-k


def search_knob(index: faiss.Index) -> Knob | None:
    """The search-time parameter the app offers for `index`: nprobe (1..nlist) for an IVF index,
    efSearch for HNSW, None for indexes that always scan everything (Flat, PQ). Notebook 10_search_explorer."""
    knob = indexes.search_knob(index)
    if knob is None:
        return None
    name, value, top = knob
    return Knob(name, 1, top or max(EF_SEARCH_MAX, value), value)


def embed_upload(content: bytes, backbone: Backbone, name: str = "upload",
                 max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, Image.Image]:
    """An uploaded file's feature vector, (1, d) float32 L2-normalised, and the image itself.

    The file goes through the same path as the sample images (`manifest.scan` checks it,
    `features.extract` runs the backbone), so its vector is comparable with the database's.
    Raises UploadError (one line) for an empty, too large (bytes, or pixels above `max_pixels`),
    non-image, truncated or corrupt file.
    """
    if not content:
        raise UploadError(f"{name}: empty file (0 bytes)")
    if len(content) > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name}: too large ({len(content) / 2**20:.1f} MiB > "
                          f"{MAX_UPLOAD_BYTES / 2**20:.0f} MiB); upload a smaller copy")
    with tempfile.TemporaryDirectory(prefix="simsearch-upload-") as folder:
        path = Path(folder) / "upload"   # the content decides the format, never the name
        path.write_bytes(content)
        result = scan(folder, max_pixels=max_pixels, progress=False)
        if result.skipped:
            raise UploadError(f"{name}: {result.skipped[0].reason}")
        features = extract(result.manifest, backbone, progress=False)
        if features.failures:
            raise UploadError(f"{name}: {features.failures[0][2]}")
        image = open_rgb(path, max_pixels)
    return normalize(features.vectors[:1]), image


def _jpeg(image: Image.Image, size: int) -> bytes:
    thumb = image.copy()
    thumb.thumbnail((size, size))
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=85)
    return out.getvalue()


def _img(jpeg: bytes, alt: str, width: int) -> str:
    """A JPEG thumbnail as an `<img>` tag with alternative text (ipywidgets' Image has no alt)."""
    data = base64.b64encode(jpeg).decode()
    return f'<img src="data:image/jpeg;base64,{data}" alt="{html.escape(alt)}" width="{width}"/>'


def _picture(jpeg: bytes, alt: str, width: int) -> widgets.HTML:
    return widgets.HTML(_img(jpeg, alt, width))


def _tile(image: widgets.Widget, caption: str, width: int) -> widgets.VBox:
    return widgets.VBox([image, widgets.HTML(caption)],
                        layout=widgets.Layout(width=f"{width + 12}px", align_items="center", margin="2px"))


def _placeholder(text: str, size: int) -> widgets.HTML:
    return widgets.HTML(f'<div style="width:{size}px;height:{size}px;background:#ddd;display:flex;'
                        f'align-items:center;justify-content:center;text-align:center;font-size:11px">'
                        f'{html.escape(text)}</div>')


def _set_range(slider: widgets.IntSlider, low: int, high: int, value: int) -> None:
    """Move a slider's bounds and value together (validation waits for all three)."""
    with slider.hold_trait_notifications():
        slider.min, slider.max, slider.value = low, high, value


class ExplorerModel:
    """What the explorer searches and shows, without a widget: the indexes, the gallery of queries,
    the current query, and `search`, which fills `shown`. Tests drive it directly.

    indexes: name -> faiss index over the database's L2-normalised vectors (inner product).
    exact: exact search over the same vectors (e.g. `IndexIDMap(IndexFlatIP(d))`): recall's reference.
    manifest: the images the ids stand for (ids not in it, such as distractors, show as grey tiles).
    queries, query_ids: the gallery's candidates (held-out images, so a query never finds itself).
    backbone: turns an uploaded photo into a vector; None disables uploading.
    """

    def __init__(self, indexes: Mapping[str, faiss.Index], exact: faiss.Index, manifest: Manifest,
                 queries: np.ndarray, query_ids: Sequence[int], backbone: Backbone | None = None, *,
                 gallery_size: int = 12):
        if not indexes:
            raise ValueError("the explorer needs at least one index")
        if len(queries) != len(query_ids) or len(queries) == 0:
            raise ValueError("queries and query_ids must be non-empty and of the same length")
        self.indexes = dict(indexes)
        self.exact = exact
        self.manifest = manifest
        self.manifests: dict[str, Manifest] = {}   # an added index's own manifest, when it has one
        self.backbone = backbone
        self.shown: Shown | None = None
        self.query: np.ndarray | None = None
        self.gallery_ids = self._pick_gallery(np.asarray(query_ids), gallery_size)
        rows = {int(q): i for i, q in enumerate(query_ids)}
        self.gallery_vectors = normalize(queries[[rows[q] for q in self.gallery_ids]])

    def add_index(self, name: str, index: faiss.Index, manifest: Manifest | None = None) -> None:
        """Offer one more index: a bundle loaded from disk, say, with the manifest its ids come
        from (default: the explorer's)."""
        self.indexes[name] = index
        if manifest is not None:
            self.manifests[name] = manifest

    def manifest_of(self, name: str) -> Manifest:
        return self.manifests.get(name, self.manifest)

    def search(self, name: str, k: int, knob: str = "") -> Shown:
        """Search the current query in index `name` (its search parameter set to `knob`, e.g.
        "nprobe=8", first), time it, compare with exact search; the result is also `shown`."""
        index = self.indexes[name]
        if knob:
            faiss.ParameterSpace().set_index_parameters(index, knob)
        q = self.query
        seconds = median_seconds(lambda: index.search(q, k), repeats=3)
        scores, ids = index.search(q, k)
        _, exact_ids = self.exact.search(q, k)
        recall = recall_at_k(ids, exact_ids, k) if index.ntotal == self.exact.ntotal else None
        self.shown = Shown(name, k, knob, ids[0], scores[0], seconds, recall, exact_ids[0])
        return self.shown

    def _pick_gallery(self, query_ids: np.ndarray, size: int) -> list[int]:
        """Up to `size` queries, one per label first (so the gallery shows every kind of photo)."""
        by_label: dict[str, int] = {}
        for q in query_ids.tolist():
            by_label.setdefault(self.manifest.entry(q).label, q)
        chosen = list(by_label.values())[:size]
        chosen += [q for q in query_ids.tolist() if q not in chosen][: size - len(chosen)]
        return [int(q) for q in chosen]


def _thumb(path: Path, size: int = THUMB) -> bytes:
    """A JPEG thumbnail of an image file, made once for each version of the file."""
    return _thumb_of(path, size, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _thumb_of(path: Path, size: int, version: int) -> bytes:
    return _jpeg(open_rgb(path), size)


def _result_tiles(shown: Shown, manifest: Manifest) -> list[widgets.Widget]:
    """One tile a result: its thumbnail (grey for a distractor), rank, label and cosine, green when
    exact search's top-k has it too."""
    in_exact = set(shown.exact_ids.tolist())
    tiles = []
    for rank, (i, score) in enumerate(zip(shown.ids.tolist(), shown.scores.tolist()), 1):
        colour = "#070" if i in in_exact else "#b00"
        if i < 0:
            tiles.append(_tile(_placeholder("no result", THUMB), f"{rank}. none", THUMB))
            continue
        if i in manifest:
            label = manifest.entry(i).label
            image = _picture(_thumb(manifest.abspath(i)), f"result {rank}: id {i}, {label}, cosine {score:.3f}", THUMB)
            what = html.escape(label)
        else:
            image, what = _placeholder("synthetic distractor (a vector, no image)", THUMB), "distractor"
        tiles.append(_tile(image, f'<span style="color:{colour}">{rank}. {what}<br>cosine {score:.3f}</span>', THUMB))
    return tiles


def _gallery(manifest: Manifest, ids: list[int], select) -> tuple[widgets.Box, list[widgets.Button]]:
    """The gallery of queries: a thumbnail and a button each; a button calls `select(its position)`."""
    buttons = [widgets.Button(description=manifest.entry(q).label, tooltip=f"query id {q}",
                              layout=widgets.Layout(width=f"{THUMB + 8}px")) for q in ids]
    for i, button in enumerate(buttons):
        button.on_click(lambda _, i=i: select(i))
    box = widgets.Box([widgets.VBox([_picture(_thumb(manifest.abspath(q)), f"query {q}: {manifest.entry(q).label}", THUMB), b],
                                    layout=widgets.Layout(align_items="center", margin="2px"))
                       for q, b in zip(ids, buttons)], layout=widgets.Layout(flex_flow="row wrap"))
    return box, buttons


def _show_knob(slider: widgets.IntSlider, knob: Knob | None) -> None:
    """The knob slider set to an index's search parameter, or disabled when it has none."""
    if knob is None:
        _set_range(slider, 1, 1, 1)
        slider.description, slider.disabled = "no knob", True
    else:
        _set_range(slider, knob.low, knob.high, knob.value)
        slider.description, slider.disabled = knob.name, False


class SearchExplorer(ExplorerModel):
    """Notebook 10_search_explorer's app: an `ExplorerModel` drawn with ipywidgets. Display it in a
    notebook cell (`app`), or read `app.widget`. Arguments as ExplorerModel's, and the k slider's."""

    def __init__(self, indexes: Mapping[str, faiss.Index], exact: faiss.Index, manifest: Manifest,
                 queries: np.ndarray, query_ids: Sequence[int], backbone: Backbone | None = None, *,
                 gallery_size: int = 12, k: int = 8, max_k: int = 20):
        super().__init__(indexes, exact, manifest, queries, query_ids, backbone, gallery_size=gallery_size)
        self._busy = False
        self._controls(k, max_k)
        self.widget = widgets.VBox([
            widgets.HTML("<b>1. Pick a query</b> from the held-out images, or upload your own photo"),
            self.gallery,
            widgets.HBox([self.upload, self.message]),
            widgets.HTML("<b>2. Choose the index, k and its search knob</b>"),
            widgets.HBox([widgets.VBox([self.query_image, self.query_caption]),
                          widgets.VBox([self.index_picker, self.k, self.knob, self.status])]),
            widgets.HTML("<b>3. Results</b> (green: also in exact search's top-k)"),
            self.results,
        ])
        self._configure_knob()
        self.select(0)

    def _controls(self, k: int, max_k: int) -> None:
        self.gallery, self.gallery_buttons = _gallery(self.manifest, self.gallery_ids, self.select)
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="Your photo",
                                         disabled=self.backbone is None)
        self.upload.observe(self._on_upload, names="value")
        self.message = widgets.HTML("")
        self.index_picker = widgets.Dropdown(options=list(self.indexes), description="index")
        self.k = widgets.IntSlider(value=min(k, max_k), min=1, max=min(max_k, self.exact.ntotal), description="k",
                                   continuous_update=False)
        self.knob = widgets.IntSlider(value=1, min=1, max=1, description="knob", continuous_update=False)
        self.status = widgets.HTML("")
        self.query_image = widgets.HTML("")
        self.query_caption = widgets.HTML("")
        self.results = widgets.Box(layout=widgets.Layout(flex_flow="row wrap"))
        for w, name in ((self.gallery, "gallery"), (self.upload, "upload"), (self.message, "message"),
                        (self.index_picker, "index"), (self.k, "k"), (self.knob, "knob"),
                        (self.status, "status"), (self.results, "results"), (self.query_image, "query")):
            w.add_class(f"simsearch-{name}")
        self.index_picker.observe(self._on_index, names="value")
        self.k.observe(self._on_control, names="value")
        self.knob.observe(self._on_control, names="value")

    # ------------------------------------------------------------ what the controls do

    def select(self, i: int) -> None:
        """Use gallery image `i` as the query."""
        q = self.gallery_ids[i]
        for j, button in enumerate(self.gallery_buttons):
            button.button_style = "info" if j == i else ""
        self.message.value = ""
        self._set_query(self.gallery_vectors[i:i + 1], _thumb(self.manifest.abspath(q), QUERY_THUMB),
                        f"query: id {q}, {self.manifest.entry(q).label}")

    def use_upload(self, content: bytes, name: str) -> bool:
        """Use an uploaded file as the query; a bad file leaves a one-line message instead."""
        if self.backbone is None:
            self.message.value = "uploading needs a backbone: pass backbone= to the explorer"
            return False
        try:
            vector, image = embed_upload(content, self.backbone, name)
        except UploadError as err:
            self.message.value = f'<span style="color:#b00">⚠ {html.escape(first_line(err))}</span>'
            return False
        for button in self.gallery_buttons:
            button.button_style = ""
        self.message.value = f"searching with your photo {html.escape(name)}"
        self._set_query(vector, _jpeg(image, QUERY_THUMB), f"query: {name} (uploaded)")
        return True

    def add_index(self, name: str, index: faiss.Index, manifest: Manifest | None = None) -> None:
        super().add_index(name, index, manifest)
        self.index_picker.options = list(self.indexes)

    def _set_query(self, vector: np.ndarray, thumb: bytes, caption: str) -> None:
        """caption: plain text, the image's alternative text too."""
        self.query = vector
        self.query_image.value = _img(thumb, caption, QUERY_THUMB)
        self.query_caption.value = html.escape(caption)
        self.refresh()

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        f = files[0]
        self.use_upload(bytes(f["content"]), f.get("name", "upload"))
        self.upload.value = ()   # cleared, so that uploading the same file again searches again

    def _on_index(self, _change) -> None:
        self._configure_knob()
        self.refresh()

    def _on_control(self, _change) -> None:
        if not self._busy:
            self.refresh()

    def _configure_knob(self) -> None:
        self._busy = True   # moving the slider's range must not search with a half-set slider
        try:
            _show_knob(self.knob, search_knob(self.indexes[self.index_picker.value]))
        finally:
            self._busy = False

    def refresh(self) -> Shown:
        """Search with the current query and controls, and show the results."""
        knob = "" if self.knob.disabled else f"{self.knob.description}={self.knob.value}"
        s = self.search(self.index_picker.value, self.k.value, knob)
        self.results.children = _result_tiles(s, self.manifest_of(s.index))
        recall = "n/a (this index holds other vectors)" if s.recall is None else f"{s.recall:.2f}"
        self.status.value = (f"{html.escape(s.index)}{' · ' + s.knob if s.knob else ''} · k = {s.k}<br>"
                             f"search time {s.seconds * 1e3:.2f} ms<br>recall@{s.k} against exact search: {recall}")
        return s

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
