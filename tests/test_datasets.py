import functools
import gzip
import hashlib
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import datasets
from helpers.datasets import (DatasetUnavailable, available_sources, build_fashion_mnist,
                              build_messy_folder, build_photo_variants, ensure_dataset, make_variant)
from helpers.images import open_rgb
from helpers.manifest import scan
from helpers.settings import load_settings


def digest_tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> Path:
    return build_photo_variants(tmp_path_factory.mktemp("a") / "photo_variants")


def test_at_least_twelve_real_source_photos_are_available():
    names = [s.name for s in available_sources()]
    assert len(names) >= 12
    assert {"chelsea", "coffee", "rocket", "china", "grace_hopper"} <= set(names)


def test_photo_variants_layout_labels_and_ground_truth(variants):
    result = scan(variants, progress=False)
    assert result.skipped == []
    counts = result.manifest.label_counts()
    assert len(counts) == len(available_sources())
    assert set(counts.values()) == {datasets.VARIANTS_PER_SOURCE}
    csv_rows = variants.with_suffix(".csv").read_text().splitlines()
    assert len(csv_rows) == 1 + len(result.manifest)
    ops = " ".join(csv_rows)
    for op in ("crop", "flip", "rotate", "scale", "colour", "blur", "jpeg"):
        assert op in ops


def test_photo_variants_are_byte_identical_across_builds(variants, tmp_path):
    again = build_photo_variants(tmp_path / "photo_variants")
    assert digest_tree(again) == digest_tree(variants)
    assert again.with_suffix(".csv").read_bytes() == variants.with_suffix(".csv").read_bytes()


def test_variants_differ_from_the_original_but_stay_similar(variants):
    original = open_rgb(variants / "chelsea" / "chelsea_00.jpg")
    for i in range(1, datasets.VARIANTS_PER_SOURCE):
        img, ops = make_variant(original, "chelsea", i)
        assert ops != "original"
        assert img.size != original.size or not np.array_equal(np.asarray(img), np.asarray(original))


def write_idx(path: Path, array: np.ndarray) -> Path:
    """A gzipped IDX file of unsigned bytes, as Fashion-MNIST ships."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))
    return path


@pytest.fixture
def tiny_fashion(tmp_path):
    """Tiny Fashion-MNIST test split: 5 images of each class, each image filled with its index."""
    labels = np.repeat(np.arange(10), 5)[np.random.default_rng(0).permutation(50)]
    images = np.arange(50, dtype=np.uint8)[:, None, None] * np.ones((1, 28, 28), np.uint8)
    folder = tmp_path / "idx"
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
    return folder, images, labels


def test_fashion_mnist_from_debian_files(tiny_fashion, tmp_path, monkeypatch):
    folder, images, labels = tiny_fashion
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_DIR", folder)
    out, origin = build_fashion_mnist(tmp_path / "fm", per_class=3)
    assert "Debian" in origin
    m = scan(out, progress=False).manifest
    assert m.label_counts() == {c: 3 for c in sorted(datasets.FASHION_CLASSES)}
    assert {(e.width, e.height) for e in m} == {(28, 28)}
    for e in m:   # each PNG holds the image its name says, under its class's folder
        index = int(Path(e.path).stem.split("_")[1])
        assert datasets.FASHION_CLASSES[labels[index]] == e.label
        assert np.array_equal(np.asarray(Image.open(m.abspath(e))), images[index])
    firsts = {datasets.FASHION_CLASSES[c]: sorted(np.flatnonzero(labels == c)[:3]) for c in range(10)}
    assert {c: sorted(int(Path(e.path).stem.split("_")[1]) for e in m if e.label == c) for c in firsts} == firsts


def _torchvision_source(monkeypatch, mirror: str, files: dict[str, str]) -> None:
    """torchvision's FashionMNIST downloading from `mirror`, with these {file name: md5}."""
    from torchvision.datasets import FashionMNIST

    monkeypatch.setattr(FashionMNIST, "mirrors", [mirror])
    monkeypatch.setattr(FashionMNIST, "resources", list(files.items()))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_fashion_mnist_downloads_when_debian_files_are_absent(tiny_fashion, tmp_path, monkeypatch):
    folder, images, labels = tiny_fashion
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_DIR", tmp_path / "no_debian_package")
    write_idx(folder / "train-images-idx3-ubyte.gz", images)
    write_idx(folder / "train-labels-idx1-ubyte.gz", labels)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    handler = functools.partial(_QuietHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:  # a local mirror
        threading.Thread(target=server.serve_forever, daemon=True).start()
        _torchvision_source(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}/", md5)
        try:
            out, origin = build_fashion_mnist(tmp_path / "fm", per_class=2, cache_dir=tmp_path / "cache")
        finally:
            server.shutdown()
    assert "torchvision download" in origin
    assert scan(out, progress=False).manifest.label_counts() == {c: 2 for c in datasets.FASHION_CLASSES}


def test_fashion_mnist_unavailable_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_DIR", tmp_path / "no_debian_package")
    _torchvision_source(monkeypatch, (tmp_path / "unreachable").as_uri() + "/",
                        {"t10k-images-idx3-ubyte.gz": "0" * 32, "t10k-labels-idx1-ubyte.gz": "0" * 32})
    with pytest.raises(DatasetUnavailable, match=r"apt-get install dataset-fashion-mnist.*go online"):
        build_fashion_mnist(tmp_path / "fm", per_class=3, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "fm").exists()          # nothing half-built


def test_a_missing_own_folder_is_named_with_where_it_was_looked_for(tmp_path):
    settings = load_settings({"SIMSEARCH_DATASET": "no/such/photos"})
    with pytest.raises(DatasetUnavailable, match=r"'no/such/photos': no such folder \(.*no/such/photos; a relative path"):
        ensure_dataset(settings)
    (tmp_path / "a_file.jpg").write_bytes(b"x")
    with pytest.raises(DatasetUnavailable, match="is a file, not a folder"):
        ensure_dataset(load_settings({"SIMSEARCH_DATASET": str(tmp_path / "a_file.jpg")}))


def test_messy_folder_copies_a_few_photos_and_never_replaces_a_users_folder(photo_folder, tmp_path):
    manifest = scan(photo_folder, progress=False).manifest
    expect = build_messy_folder(tmp_path / "messy", manifest, limit=4)
    copied = [p for p, o in expect.items() if o == "ok" and not p.startswith("odd_files/")]
    assert copied == [e.path for e in manifest][:4]         # at most `limit`, not the whole folder
    result = scan(tmp_path / "messy", progress=False)
    reasons = {s.path: s.reason for s in result.skipped}
    assert {e.path for e in result.manifest} == {p for p, o in expect.items() if o == "ok"}
    for path, outcome in expect.items():
        if outcome != "ok":
            assert outcome in reasons[path], (path, reasons.get(path))
    again = build_messy_folder(tmp_path / "messy", manifest, limit=2)    # its own folder: replaced
    assert len([p for p in again if not p.startswith("odd_files/") and again[p] == "ok"]) == 2
    with pytest.raises(FileExistsError, match="not made by build_messy_folder"):
        build_messy_folder(photo_folder, manifest)
    assert scan(photo_folder, progress=False).manifest.content_hash() == manifest.content_hash()
