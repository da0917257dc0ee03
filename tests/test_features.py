"""helpers.features: aligned batched extraction, failures recorded, the cache, the CLI, retrieval."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import skimage.data
from PIL import Image

from helpers.__main__ import main
from helpers.backbones import load_backbone
from helpers.datasets import build_photo_variants
from helpers.indexes import normalize
from helpers.features import (FeatureError, extract, load_features, load_or_extract,
                              save_features)
from helpers.manifest import Manifest, scan

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "hubble_deep_field", "immunohistochemistry")


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0", verbose=False)


@pytest.fixture
def photos(tmp_path):
    """Six small photos in odd modes (grey, RGBA) among plain JPEGs, scanned into a manifest."""
    root = tmp_path / "photos"
    root.mkdir()
    for i, name in enumerate(PHOTOS):
        img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((160, 120))
        img = img.convert("L") if i == 1 else img.convert("RGBA") if i == 3 else img
        img.save(root / f"{i}_{name}.{'png' if i in (1, 3) else 'jpg'}")
    return scan(root, progress=False).manifest


def test_extract_gives_aligned_float32_vectors(photos, lite0):
    fs = extract(photos, lite0, batch_size=4, progress=False)
    assert fs.vectors.shape == (6, 1280) and fs.vectors.dtype == np.float32
    assert fs.vectors.flags.c_contiguous and fs.ids.dtype == np.int64
    assert np.array_equal(fs.ids, photos.ids) and not fs.failures
    alone = extract(Manifest(photos.root, [photos[2]]), lite0, progress=False)
    np.testing.assert_allclose(alone.vectors[0], fs.vectors[2], rtol=1e-4, atol=1e-5)
    assert fs.meta["manifest_hash"] == photos.content_hash()
    assert (fs.meta["backbone"], fs.meta["dim"], fs.meta["precision"]) == ("efficientnet_lite0", 1280, "fp32")
    assert fs.images_per_second > 0
    assert fs.meta["decode"] == "full"


def test_a_broken_image_mid_batch_does_not_stop_the_run(photos, lite0):
    clean = extract(photos, lite0, batch_size=4, progress=False)
    entries = list(photos)
    truncated = photos.abspath(entries[1])   # a file that is broken and listed with its hash
    data = truncated.read_bytes()[:200]
    truncated.write_bytes(data)
    entries[1] = dataclasses.replace(entries[1], sha256=hashlib.sha256(data).hexdigest())
    photos.abspath(entries[2]).write_bytes(b"replaced after the scan")   # changed since the scan
    photos.abspath(entries[4]).unlink()                                  # deleted since the scan
    fs = extract(Manifest(photos.root, entries), lite0, batch_size=4, progress=False)
    assert [f[0] for f in fs.failures] == [entries[1].id, entries[2].id, entries[4].id]
    reasons = [f[2] for f in fs.failures]
    assert "truncated" in reasons[0] or "corrupt" in reasons[0], reasons[0]
    assert "changed since the manifest" in reasons[1]
    assert reasons[2].startswith("cannot read file"), reasons[2]
    keep = [0, 3, 5]
    assert np.array_equal(fs.ids, clean.ids[keep])
    np.testing.assert_allclose(fs.vectors, clean.vectors[keep], rtol=1e-4, atol=1e-5)


def test_normalize_gives_unit_rows(photos, lite0):
    fs = extract(photos, lite0, normalize=True, progress=False)
    np.testing.assert_allclose(np.linalg.norm(fs.vectors, axis=1), 1.0, rtol=1e-5)
    x = normalize(np.array([[3, 4], [0, 0]], dtype=np.float64))
    assert x.dtype == np.float32 and np.allclose(x, [[0.6, 0.8], [0, 0]])


def test_bf16_is_opt_in_and_close_to_fp32(photos, lite0):
    fp32 = extract(photos, lite0, progress=False)
    bf16 = extract(photos, lite0, precision="bf16", progress=False)
    assert bf16.meta["precision"] == "bf16" and bf16.vectors.dtype == np.float32
    cos = (normalize(fp32.vectors) * normalize(bf16.vectors)).sum(axis=1)
    assert 0.95 < cos.min() and cos.max() < 1 - 1e-7  # close, not equal: the trade-off
    with pytest.raises(ValueError, match="precision"):
        extract(photos, lite0, precision="fp16")


def test_save_and_load_round_trip(photos, lite0, tmp_path):
    fs = extract(photos, lite0, progress=False)
    fs.failures = [(99, "gone.jpg", "not an image")]
    out = save_features(fs, tmp_path / "out" / "feats.npy")
    assert sorted(p.name for p in out.parent.iterdir()) == ["feats.ids.npy", "feats.json", "feats.npy"]
    back = load_features(out)
    assert np.array_equal(back.vectors, fs.vectors) and np.array_equal(back.ids, fs.ids)
    assert back.failures == fs.failures and back.meta["preprocessing"] == lite0.preprocessing
    np.save(tmp_path / "out" / "feats.ids.npy", fs.ids[:3])
    with pytest.raises(FeatureError, match="do not agree"):
        load_features(out)


def test_cache_hit_miss_and_invalidation(photos, lite0, tmp_path):
    cache = tmp_path / "cache"
    first, status = load_or_extract(photos, lite0, cache, progress=False)
    assert status == "cache miss: no cache"
    again, status = load_or_extract(photos, lite0, cache, progress=False)
    assert status == "cache hit" and np.array_equal(again.vectors, first.vectors)
    assert load_or_extract(photos, lite0, cache, normalize=True, progress=False)[1] == \
        "cache miss: normalisation changed"
    assert load_or_extract(photos, lite0, cache, progress=False)[1] == "cache miss: normalisation changed"
    assert load_or_extract(photos, lite0, cache, jpeg_draft=True, progress=False)[1] == \
        "cache miss: decoding changed"
    assert load_or_extract(photos, lite0, cache, progress=False)[1] == "cache miss: decoding changed"
    other = dataclasses.replace(lite0, weights_id="other-weights")
    assert load_or_extract(photos, other, cache, progress=False)[1] == "cache miss: weights changed"
    resized = dataclasses.replace(other, preprocessing={**lite0.preprocessing, "crop": [200]})
    assert load_or_extract(photos, resized, cache, progress=False)[1] == "cache miss: preprocessing changed"
    renamed = dataclasses.replace(resized, name="other_backbone")
    assert load_or_extract(photos, renamed, cache, progress=False)[1] == "cache miss: backbone changed"
    fewer = Manifest(photos.root, list(photos)[:4])
    fs, status = load_or_extract(fewer, renamed, cache, progress=False)
    assert status == "cache miss: images changed" and len(fs) == 4
    (cache / "features.json").write_text("{not json")
    assert load_or_extract(fewer, renamed, cache, progress=False)[1].startswith("cache miss: unreadable")
    assert load_or_extract(fewer, renamed, cache, progress=False)[1] == "cache hit"


def test_cli_writes_the_three_files(photos, tmp_path, capsys):
    csv_path = photos.save(tmp_path / "manifest.csv")
    out = tmp_path / "features.npy"
    assert main(["features", str(csv_path), "--out", str(out), "--backbone", "efficientnet_lite0",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "backbone efficientnet_lite0" in printed and "dimension 1280" in printed
    assert "images/s" in printed
    assert np.load(out).shape == (6, 1280)
    assert np.array_equal(np.load(tmp_path / "features.ids.npy"), photos.ids)
    meta = json.loads((tmp_path / "features.json").read_text())
    assert meta["manifest_hash"] == Manifest.load(csv_path).content_hash() and meta["failures"] == []
    assert main(["features", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2


def test_retrieval_on_photo_variants_is_far_above_chance(tmp_path, lite0):
    """Leave-one-out nearest neighbour: is it another variant of the same source photo?"""
    manifest = scan(build_photo_variants(tmp_path / "variants", variants_per_source=4),
                    progress=False).manifest
    fs = extract(manifest, lite0, normalize=True, progress=False)
    labels = np.array([manifest.entry(i).label for i in fs.ids])
    sims = fs.vectors @ fs.vectors.T
    np.fill_diagonal(sims, -np.inf)
    recall_at_1 = float(np.mean(labels[sims.argmax(axis=1)] == labels))
    chance = (4 - 1) / (len(labels) - 1)
    print(f"recall@1 on {len(labels)} photo variants with {lite0.name}: {recall_at_1:.3f} "
          f"(chance {chance:.3f})")
    assert not fs.failures and len(set(labels)) >= 10
    assert recall_at_1 >= 0.9 > 10 * chance


def test_fast_jpeg_decoding_moves_features_only_slightly(tmp_path, lite0):
    for name in PHOTOS[:3]:
        img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        s = 1100 / min(img.size)   # large enough for 1/2-scale decoding above 2 x 256
        img.resize((round(img.width * s), round(img.height * s))).save(tmp_path / f"{name}.jpg", quality=90)
    manifest = scan(tmp_path, progress=False).manifest
    full = extract(manifest, lite0, progress=False)
    fast = extract(manifest, lite0, jpeg_draft=True, progress=False)
    assert fast.meta["decode"] == "jpeg draft, short side >= 512" and full.meta["decode"] == "full"
    assert not np.array_equal(fast.vectors, full.vectors)               # it did decode differently
    cos = (normalize(fast.vectors) * normalize(full.vectors)).sum(axis=1)
    assert cos.min() > 0.97, cos
