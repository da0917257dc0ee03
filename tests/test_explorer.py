"""The search explorer (notebook 10_search_explorer), driven without a browser: build the app, set widget values,
assert what it renders."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from datetime import datetime, timezone

import faiss
import ipywidgets as widgets
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from helpers import explorer as ex
from helpers.backbones import Backbone
from helpers.explorer import SearchExplorer, UploadError, embed_upload, search_knob
from helpers.features import extract
from helpers.manifest import Manifest, scan

from .conftest import write_photo

DISTRACTORS = 400
NOW = datetime.now(timezone.utc)


def make_tiny_backbone() -> Backbone:
    """A backbone with no weights to load: 4x4 average colour = 48-d vectors, in milliseconds."""
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())
    tf = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
    return Backbone("tiny", "none", 48, model, tf, {"resize": [32, 32], "crop": [32, 32]}, "test")


@pytest.fixture(scope="module")
def tiny_backbone() -> Backbone:
    return make_tiny_backbone()


@pytest.fixture(scope="module")
def photos(tmp_path_factory, tiny_backbone):
    """Twelve photos in four labels, scanned and through the backbone (once for the module)."""
    root = tmp_path_factory.mktemp("explorer") / "photos"
    for label in range(4):
        for i in range(3):
            write_photo(root / f"label{label}" / f"{i}.png", 10 * label + i)
    manifest = scan(root, progress=False).manifest
    return manifest, extract(manifest, tiny_backbone, progress=False)


@pytest.fixture
def world(photos, faiss_one_thread):
    """The photos plus synthetic distractors, indexed four ways as notebook 10_search_explorer does."""
    manifest, fs = photos
    rng = np.random.default_rng(0)
    xb = np.vstack([fs.vectors, rng.standard_normal((DISTRACTORS, 48)).astype(np.float32)])
    ids = np.concatenate([fs.ids, 10**12 + np.arange(DISTRACTORS)])
    faiss.normalize_L2(xb)
    d, ip = xb.shape[1], faiss.METRIC_INNER_PRODUCT
    exact = faiss.IndexIDMap(faiss.IndexFlatIP(d))
    indexes = {"Flat": faiss.IndexIDMap(faiss.IndexFlatIP(d)), "IVF": faiss.index_factory(d, "IVF8,Flat", ip),
               "HNSW": faiss.IndexIDMap(faiss.IndexHNSWFlat(d, 8, ip)), "PQ": faiss.IndexIDMap(faiss.IndexPQ(d, 4, 4, ip))}
    for index in [exact, *indexes.values()]:
        index.train(xb)
        index.add_with_ids(xb, ids)
    return indexes, exact, manifest, fs


def make_app(world, backbone=None, **kw) -> SearchExplorer:
    indexes, exact, manifest, fs = world
    return SearchExplorer(indexes, exact, manifest, fs.vectors, fs.ids, backbone, **kw)


def is_picture(w) -> bool:
    """A thumbnail: an <img> with alternative text (explorer._picture)."""
    return isinstance(w, widgets.HTML) and re.search(r'<img src="data:image/jpeg;base64,[^"]+" alt="[^"]+"', w.value) is not None


def images_in(box: widgets.Box) -> list[widgets.HTML]:
    return [w for tile in box.children for w in tile.children if is_picture(w)]


def png_bytes(seed: int, size=(64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def test_app_renders_gallery_controls_and_results(world):
    app = make_app(world, k=5, gallery_size=4)
    assert len(app.gallery_buttons) == 4 == len(app.gallery.children)
    assert len({app.manifest.entry(q).label for q in app.gallery_ids}) == 4, "one image per label first"
    assert len(make_app(world, gallery_size=6).gallery_ids) == 6, "then the other queries"
    assert app.gallery_buttons[0].button_style == "info"
    assert len(images_in(app.results)) == 5 == len(app.results.children)
    s = app.shown
    assert s.index == "Flat" and s.k == 5 and s.recall == 1.0 and s.seconds > 0
    assert s.ids[0] == app.gallery_ids[0], "a query in the database finds itself first"
    assert s.scores[0] == pytest.approx(1.0, abs=1e-5) and np.all(np.diff(s.scores) <= 1e-6)
    assert "recall@5 against exact search: 1.00" in app.status.value
    assert app.knob.disabled and app.knob.description == "no knob"
    assert isinstance(app._repr_mimebundle_(), dict)


def test_k_slider_changes_the_results_shown(world):
    app = make_app(world, k=5)
    app.k.value = 15
    assert app.shown.k == 15 and len(app.results.children) == 15
    assert "k = 15" in app.status.value
    placeholders = [t for t in app.results.children if not any(is_picture(w) for w in t.children)]
    assert placeholders, "beyond the 12 photos, distractors show as grey tiles"
    assert "distractor" in placeholders[0].children[1].value


def test_ivf_knob_is_nprobe_and_reaches_faiss(world):
    app = make_app(world, k=10)
    app.index_picker.value = "IVF"
    assert (app.knob.description, app.knob.min, app.knob.max) == ("nprobe", 1, 8) and not app.knob.disabled
    app.knob.value = 1
    ivf = faiss.extract_index_ivf(app.indexes["IVF"])
    assert ivf.nprobe == 1 and app.shown.knob == "nprobe=1"
    assert "nprobe=1" in app.status.value
    app.knob.value = 8
    assert ivf.nprobe == 8 and app.shown.recall == 1.0, "visiting every list is exact search"


def test_recall_shows_what_an_approximate_index_misses(world):
    app = make_app(world, k=10)
    app.index_picker.value = "PQ"
    assert app.knob.disabled
    found = set(app.shown.ids.tolist())
    assert app.shown.recall == len(found & set(app.shown.exact_ids.tolist())) / 10
    greens = sum('color:#070' in tile.children[1].value for tile in app.results.children)
    assert greens == round(app.shown.recall * 10), "a green caption marks each result exact search found too"


def test_hnsw_knob_is_efsearch(world):
    app = make_app(world)
    app.index_picker.value = "HNSW"
    assert app.knob.description == "efSearch" and app.knob.max == ex.EF_SEARCH_MAX
    app.knob.value = 100
    hnsw = faiss.downcast_index(app.indexes["HNSW"].index)
    assert hnsw.hnsw.efSearch == 100 and app.shown.knob == "efSearch=100"
    assert search_knob(faiss.IndexFlatIP(4)) is None


def test_gallery_button_changes_the_query(world):
    app = make_app(world, k=3)
    first = app.shown.ids.tolist()
    app.gallery_buttons[2].click()
    assert app.gallery_buttons[2].button_style == "info" and app.gallery_buttons[0].button_style == ""
    assert app.shown.ids[0] == app.gallery_ids[2] and app.shown.ids.tolist() != first
    assert f"id {app.gallery_ids[2]}" in app.query_caption.value


def test_upload_of_a_database_photo_finds_it_first(world, tiny_backbone):
    app = make_app(world, tiny_backbone, k=4)
    manifest = world[2]
    target = manifest[5]
    content = manifest.abspath(target).read_bytes()
    app.upload.value = ({"name": "mine.png", "type": "image/png", "size": len(content),
                         "content": memoryview(content), "last_modified": NOW},)   # as the browser sends it
    assert "searching with your photo mine.png" in app.message.value
    assert app.shown.ids[0] == target.id and app.shown.scores[0] == pytest.approx(1.0, abs=1e-5)
    assert all(b.button_style == "" for b in app.gallery_buttons)
    assert "(uploaded)" in app.query_caption.value
    assert app.upload.value == (), "cleared, so the same file can be uploaded again"


def truncated_png() -> bytes:
    return png_bytes(1, (200, 150))[:400]


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"this is a text file, not a photo\n" * 10, "not an image"),
    (truncated_png(), "truncated"),
    (b"\0" * (ex.MAX_UPLOAD_BYTES + 1), "too large"),
])
def test_bad_upload_gives_one_line_and_keeps_the_results(world, tiny_backbone, content, reason):
    app = make_app(world, tiny_backbone)
    before = app.shown
    app.upload.value = ({"name": "bad.jpg", "type": "image/jpeg", "size": len(content),
                         "content": memoryview(content), "last_modified": NOW},)
    assert reason in app.message.value and "bad.jpg" in app.message.value
    assert "\n" not in app.message.value and "Traceback" not in app.message.value
    assert app.shown is before, "a bad upload leaves the last search on screen"


def test_too_many_pixels_is_refused(tiny_backbone):
    with pytest.raises(UploadError, match="big.png: too large: 64x48"):
        embed_upload(png_bytes(2), tiny_backbone, "big.png", max_pixels=1000)


def test_upload_without_a_backbone_says_so(world):
    app = make_app(world)
    assert app.upload.disabled
    assert not app.use_upload(png_bytes(3), "x.png") and "needs a backbone" in app.message.value


def test_added_index_is_offered_with_its_own_manifest(world):
    app = make_app(world, k=3)
    manifest, fs = world[2], world[3]
    # a bundle saved elsewhere: the same photos listed under other ids, by another manifest
    theirs = Manifest(manifest.root, [replace(e, id=e.id + 100, duplicate_of=None) for e in manifest])
    other = faiss.IndexIDMap(faiss.IndexFlatIP(48))
    vectors = np.ascontiguousarray(fs.vectors)
    faiss.normalize_L2(vectors)
    other.add_with_ids(vectors, fs.ids + 100)
    app.add_index("bundle", other, theirs)
    assert app.index_picker.options[-1] == "bundle"
    app.index_picker.value = "bundle"
    assert app.shown.index == "bundle" and app.shown.recall is None, "other vectors: no recall"
    assert app.shown.ids[0] == app.gallery_ids[0] + 100
    assert "n/a" in app.status.value and len(images_in(app.results)) == 3, "ids found in the bundle's manifest"
    label = manifest.entry(app.gallery_ids[0]).label
    assert label in app.results.children[0].children[1].value


def test_explorer_refuses_empty_inputs(world):
    indexes, exact, manifest, fs = world
    with pytest.raises(ValueError, match="at least one index"):
        SearchExplorer({}, exact, manifest, fs.vectors, fs.ids)
    with pytest.raises(ValueError, match="same length"):
        SearchExplorer(indexes, exact, manifest, fs.vectors[:2], fs.ids)


def test_the_model_searches_without_any_widget(world):
    """ExplorerModel is the app without ipywidgets: a query, an index, k and a knob give `shown`."""
    from helpers.explorer import ExplorerModel

    indexes, exact, manifest, fs = world
    model = ExplorerModel(indexes, exact, manifest, fs.vectors, fs.ids)
    assert not hasattr(model, "widget") and model.shown is None
    model.query = model.gallery_vectors[:1]
    shown = model.search("Flat", 5)
    assert shown is model.shown and shown.recall == 1.0 and shown.knob == ""
    assert np.array_equal(shown.ids, shown.exact_ids)
    assert model.search("IVF", 5, "nprobe=1").knob == "nprobe=1"
    assert faiss.extract_index_ivf(indexes["IVF"]).nprobe == 1, "the knob reaches Faiss"
