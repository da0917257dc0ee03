"""Index bundles (helpers.store): round trips, atomic writes, refusals, updates with stable ids."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pytest
from torch import nn
from torchvision import transforms as T

from helpers import indexes as ix
from helpers import store
from helpers.backbones import Backbone
from helpers.features import extract
from helpers.manifest import scan
from tests.conftest import write_photo

REPO = Path(__file__).resolve().parent.parent
D = 48
#: Every index type the course teaches, as factory strings (trained on TRAIN random vectors).
FACTORIES = ["IDMap,Flat", "IVF4,Flat", "IVF4,PQ8x4", "OPQ4_16,IVF4,PQ4x4", "IDMap,HNSW8", "IDMap,PCA16,HNSW8,RFlat"]
REMOVABLE = {"IDMap,Flat", "IVF4,Flat", "IVF4,PQ8x4", "OPQ4_16,IVF4,PQ4x4"}
TRAIN = np.random.default_rng(0).standard_normal((700, D)).astype(np.float32)
faiss.normalize_L2(TRAIN)


def tiny_backbone(name: str = "tiny", dim: int = D) -> Backbone:
    """A fast stand-in for a CNN: 4x4 average colours of an 8x8 thumbnail (48-d), deterministic."""
    model = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(D, dim, bias=False))
    nn.init.eye_(model[2].weight) if dim == D else nn.init.constant_(model[2].weight, 0.1)
    pre = {"resize": [8], "crop": [8], "interpolation": "bilinear", "antialias": True,
           "mean": [0, 0, 0], "std": [1, 1, 1], "source": "test"}
    tf = T.Compose([T.Resize((8, 8)), T.ToTensor()])
    return Backbone(name, f"{name}-weights", dim, model, tf, pre, "test backbone", None)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for i in range(12):
        write_photo(root / ("a" if i % 2 else "b") / f"p{i}.png", seed=i, size=(32, 24))
    return root


def make_bundle(folder: Path, factory: str, out: Path, backbone: Backbone | None = None) -> store.Bundle:
    """Scan, extract with the tiny backbone, build `factory` in plain Faiss calls, save."""
    backbone = backbone or tiny_backbone()
    manifest = scan(folder, progress=False).manifest
    fs = extract(manifest, backbone, progress=False)
    index = ix.with_ids(faiss.index_factory(D, factory, faiss.METRIC_INNER_PRODUCT))
    index.train(TRAIN)
    x = fs.vectors.copy()
    faiss.normalize_L2(x)
    index.add_with_ids(x, fs.ids)
    params = ("efSearch=64,k_factor_rf=16" if "RFlat" in factory else "efSearch=64" if "HNSW" in factory
              else "nprobe=4" if "IVF" in factory else "")
    if params:
        faiss.ParameterSpace().set_index_parameters(index, params)
    bundle = store.Bundle(None, index, manifest, store.metadata(index, manifest, fs.meta, factory, params))
    store.save(bundle, out)
    return bundle


def queries(n: int = 5) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, D)).astype(np.float32)


@pytest.mark.parametrize("factory", FACTORIES)
def test_round_trip_gives_identical_results_also_memory_mapped(factory, photos, tmp_path, faiss_one_thread):
    made = make_bundle(photos, factory, tmp_path / "b")
    scores, ids = made.search(queries(), k=5)
    for mmap in (False, True):
        loaded = store.load(tmp_path / "b", backbone=tiny_backbone(), metric="cosine", mmap=mmap)
        got_scores, got_ids = loaded.search(queries(), k=5)
        np.testing.assert_array_equal(got_ids, ids)
        np.testing.assert_array_equal(got_scores, scores)
        assert loaded.read_only == mmap
        assert set(loaded.manifest.ids) >= set(ids[ids >= 0].tolist())
    meta = json.loads((tmp_path / "b" / store.META_FILE).read_text())
    assert meta["factory"] == factory and meta["count"] == 12 and meta["dim"] == D
    assert meta["backbone"]["backbone"] == "tiny" and meta["faiss"] == faiss.__version__


def test_manifest_holds_only_indexed_images_and_default_factory(photos, tmp_path):
    manifest = scan(photos, progress=False).manifest
    fs = extract(manifest, tiny_backbone(), progress=False)
    keep = fs.ids[:7]
    fs.vectors, fs.ids = fs.vectors[:7], keep
    bundle = store.build(manifest, fs, progress=False)
    assert bundle.meta["factory"] == "IDMap,Flat" and len(bundle.manifest) == 7
    assert store.default_factory(100_000) == ("IVF1265,Flat", "nprobe=32")
    with pytest.raises(store.BundleError, match="different manifest"):
        store.build(scan(photos / "a", progress=False).manifest, fs, progress=False)
    with pytest.raises(store.BundleError, match="Faiss cannot build 'IVF999,Flat'"):
        store.build(manifest, fs, "IVF999,Flat", progress=False)


def test_recommended_index_is_trained_on_a_sample_tuned_and_saved_with_its_setting(tmp_path):
    """What `python -m helpers index --budget --recall` does: recommend, build, tune, save, load."""
    from helpers.features import FeatureSet
    from helpers.manifest import Entry, Manifest
    from helpers.tuning import recommend

    rng = np.random.default_rng(3)
    n, d = 12_000, 32
    centres = rng.standard_normal((200, d))
    x = (centres[rng.integers(0, 200, n)] + 0.5 * rng.standard_normal((n, d))).astype(np.float32)
    manifest = Manifest(tmp_path, [Entry(i + 10, f"img{i}.jpg", f"{i:064x}", 1, 1, 1, "JPEG", "")
                                   for i in range(n)])
    fs = FeatureSet(x, np.arange(n, dtype=np.int64) + 10, meta={"manifest_hash": manifest.content_hash()})
    rec = recommend(n, d, 0.6 * n * 4 * d, 0.9)            # 60% of Flat's memory: no full vectors
    assert rec.factory.startswith("IVF") and not rec.factory.endswith(",Flat")
    with pytest.raises(store.BundleError, match="Faiss cannot build"):   # n_train is honoured: 100 < nlist
        store.build(manifest, fs, rec.factory, n_train=100, progress=False)
    bundle = store.build(manifest, fs, rec.factory, params=rec.fixed or None, n_train=rec.n_train, progress=False)
    tuned = store.tune(bundle, fs, 0.9, param=rec.param, values=rec.values)
    assert tuned.reached and bundle.meta["search_parameters"] == tuned.setting
    lower = [r["recall@10"] - r["standard error"] for r in tuned.rows]   # tune's margin: one standard error
    assert lower[-1] >= 0.9 and all(v < 0.9 for v in lower[:-1])
    store.save(bundle, tmp_path / "b")
    loaded = store.load(tmp_path / "b")
    assert loaded.meta["search_parameters"] == tuned.setting
    assert faiss.extract_index_ivf(loaded.index).nprobe == int(tuned.setting.split("nprobe=")[1])


def test_build_trains_on_the_blas_path_and_restores_the_threshold(photos, monkeypatch):
    """PQ's k-means on short sub-vectors fall under Faiss's BLAS threshold: build forces BLAS (0)
    while training only."""
    seen = []
    original = faiss.IndexIVFFlat.train

    def train(self, x):
        seen.append(faiss.cvar.distance_compute_blas_threshold)
        return original(self, x)

    monkeypatch.setattr(faiss.IndexIVFFlat, "train", train)
    manifest = scan(photos, progress=False).manifest
    before = faiss.cvar.distance_compute_blas_threshold
    store.build(manifest, extract(manifest, tiny_backbone(), progress=False), "IVF2,Flat", progress=False)
    assert seen == [0] and before != 0
    assert faiss.cvar.distance_compute_blas_threshold == before


def test_interrupted_write_leaves_the_old_bundle_loadable(photos, tmp_path):
    out = tmp_path / "b"
    before = make_bundle(photos, "IDMap,Flat", out)
    child = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
import faiss, numpy as np
from helpers import store
old = store.load({str(out)!r})
d = 1_000_000   # 12 vectors of a million dimensions: a 48 MB index file, slow enough to interrupt
index = faiss.IndexIDMap(faiss.IndexFlatIP(d))
index.add_with_ids(np.ones((12, d), np.float32), old.manifest.ids)
print("writing", flush=True)
store.save(store.Bundle(None, index, old.manifest, old.meta), {str(out)!r})
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout.readline().strip() == "writing"
        deadline = time.time() + 60
        while time.time() < deadline and not any(p.stat().st_size for p in tmp_path.glob(".b.*.tmp/.index.faiss.*")):
            time.sleep(0.002)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert list(tmp_path.glob(".b.*.tmp")), "killed while the new bundle was being written"
    after = store.load(out, backbone=tiny_backbone())
    assert after.meta["index_sha256"] == before.meta["index_sha256"] and after.index.d == D


def test_save_replaces_a_bundle_and_leaves_no_temporary_folder(photos, tmp_path):
    make_bundle(photos, "IDMap,Flat", tmp_path / "b")
    make_bundle(photos / "a", "IDMap,HNSW8", tmp_path / "b")
    assert store.load(tmp_path / "b").index.ntotal == 6
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_each_mismatch_is_refused_with_what_to_do(photos, tmp_path):
    out = tmp_path / "b"
    make_bundle(photos, "IVF4,Flat", out)
    with pytest.raises(store.BundleError, match=r"holds 48-d vectors from tiny but .*gives 64-d.*use backbone tiny"):
        store.load(out, backbone=tiny_backbone("tiny", dim=64))
    with pytest.raises(store.BundleError, match=r"built with backbone tiny but other is in use: use backbone tiny with weights tiny-weights"):
        store.load(out, backbone={**tiny_backbone().identity(), "backbone": "other"})
    with pytest.raises(store.BundleError, match=r"built with weights tiny-weights but w2 is in use"):
        store.load(out, backbone={**tiny_backbone().identity(), "weights_id": "w2"})
    with pytest.raises(store.BundleError, match=r"ranks by cosine but l2 was asked for.*--metric l2"):
        store.load(out, metric="l2")
    with pytest.raises(store.BundleError, match="no such bundle folder"):
        store.load(tmp_path / "missing")

    meta_path = out / store.META_FILE
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "count": 11}))
    with pytest.raises(store.BundleError, match="the manifest lists 12 images but the index was written with 11"):
        store.load(out)
    meta_path.write_text(json.dumps({**meta, "dim": 32}))
    with pytest.raises(store.BundleError, match="its dimension is 48 but bundle.json says 32"):
        store.load(out)
    meta_path.write_text(json.dumps({**meta, "metric": "l2"}))
    with pytest.raises(store.BundleError, match="its metric is cosine but bundle.json says l2"):
        store.load(out)
    meta_path.write_text("{not json")
    with pytest.raises(store.BundleError, match="bundle.json: unreadable"):
        store.load(out)
    meta_path.write_text(json.dumps(meta))
    manifest_path = out / store.MANIFEST_FILE
    manifest_path.write_text(manifest_path.read_text().replace("p1.png", "p1.jpg"))
    with pytest.raises(store.BundleError, match="manifest.csv: changed since the bundle was written"):
        store.load(out)
    manifest_path.unlink()
    with pytest.raises(store.BundleError, match=r"not a complete bundle \(missing manifest.csv\)"):
        store.load(out)


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_corrupt_or_truncated_index_files_are_refused(damage, photos, tmp_path):
    out = tmp_path / "b"
    make_bundle(photos, "IDMap,HNSW8", out)
    path = out / store.INDEX_FILE
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF   # same size: Faiss itself would load this without a word
    else:
        data = b""
    path.write_bytes(bytes(data))
    reason = "SHA-256 is not the one recorded" if damage == "flip" else "truncated or was replaced"
    with pytest.raises(store.BundleError, match=reason):
        store.load(out)


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.99])
def test_a_truncated_file_with_a_matching_record_still_fails_cleanly(cut, photos, tmp_path):
    """Were the record rewritten to match, Faiss's own RuntimeError becomes a BundleError, no crash."""
    out = tmp_path / "b"
    make_bundle(photos, "IVF4,PQ8x4", out)
    path = out / store.INDEX_FILE
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * cut)])
    meta = json.loads((out / store.META_FILE).read_text())
    meta["index_sha256"], meta["index_bytes"] = store.sha256_file(path)
    (out / store.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(store.BundleError, match="Faiss cannot read it"):
        store.load(out)


@pytest.mark.parametrize("factory", FACTORIES)
def test_update_adds_and_removes_with_stable_ids(factory, photos, tmp_path, faiss_one_thread):
    out = tmp_path / "b"
    backbone = tiny_backbone()
    before = make_bundle(photos, factory, out, backbone)
    ids_before = {e.path: e.id for e in before.manifest}
    (photos / "a" / "p1.png").unlink()
    write_photo(photos / "b" / "p0.png", seed=100, size=(32, 24))      # changed content, same path
    write_photo(photos / "new" / "n1.png", seed=200, size=(32, 24))
    write_photo(photos / "new" / "n2.png", seed=201, size=(32, 24))
    rescan = scan(photos, store.load(out).manifest, progress=False).manifest
    bundle = store.load(out, backbone=backbone)
    report = store.update(bundle, rescan, backbone, progress=False)

    assert sorted(report.removed) == sorted([ids_before["a/p1.png"], ids_before["b/p0.png"]])
    assert len(report.added) == 3 and ids_before["b/p0.png"] in report.added
    assert bool(report.rebuilt) == (factory not in REMOVABLE)
    if report.rebuilt:
        assert "cannot remove_ids" in report.rebuilt and "rebuilt" in str(report)
    reloaded = store.load(out, backbone=backbone)
    assert reloaded.index.ntotal == len(reloaded.manifest) == 13
    for e in reloaded.manifest:                      # every surviving image kept its id
        assert ids_before.get(e.path, e.id) == e.id
    # the index answers with exactly the manifest's ids; without compression each image finds itself
    fs = extract(reloaded.manifest, backbone, progress=False)
    _, found = reloaded.search(fs.vectors, k=13)
    assert set(found.ravel().tolist()) == set(reloaded.manifest.ids.tolist())
    if "PQ" not in factory:
        np.testing.assert_array_equal(found[:, 0], fs.ids)


def test_update_refuses_memory_mapped_bundles_and_foreign_manifests(photos, tmp_path):
    out = tmp_path / "b"
    backbone = tiny_backbone()
    make_bundle(photos, "IDMap,Flat", out, backbone)
    with pytest.raises(store.BundleError, match="memory-mapped, which is read-only"):
        store.update(store.load(out, mmap=True), scan(photos, progress=False).manifest, backbone)
    fresh = scan(photos / "b", progress=False).manifest          # ids from 0 again, other paths
    with pytest.raises(store.BundleError, match="scan the folder with the bundle's manifest as `previous`"):
        store.update(store.load(out), fresh, backbone)
    with pytest.raises(store.BundleError, match="built with backbone tiny but other"):
        store.update(store.load(out), fresh, tiny_backbone("other"))


def test_query_manifest_refuses_unreadable_images(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(store.QueryError, match="junk.jpg: "):
        store.query_manifest([tmp_path / "junk.jpg"])
    with pytest.raises(store.QueryError, match="missing.jpg: no such image file"):
        store.query_manifest([tmp_path / "missing.jpg"])
