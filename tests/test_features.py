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
from helpers.manifest import Manifest, refresh, scan

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
    with pytest.raises(ValueError, match="precision 'fp16' is for GPUs"):
        extract(photos, lite0, precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="precision 'fp8'"):
        extract(photos, lite0, precision="fp8")


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


def test_cache_is_rebuilt_when_the_precision_changes(photos, lite0, tmp_path):
    cache = tmp_path / "cache"
    fp32, _ = load_or_extract(photos, lite0, cache, progress=False)
    bf16, status = load_or_extract(photos, lite0, cache, precision="bf16", progress=False)
    assert status == "cache miss: precision changed" and bf16.meta["precision"] == "bf16"
    assert not np.array_equal(bf16.vectors, fp32.vectors)      # really extracted again
    assert load_or_extract(photos, lite0, cache, precision="bf16", progress=False)[1] == "cache hit"


def test_cache_is_rebuilt_when_a_file_changes_at_the_same_path(photos, lite0, tmp_path):
    """The notebooks rescan with `refresh` before `load_or_extract`: a photo replaced under the
    same name changes the manifest's content hash, so its old vector is never served."""
    cache = tmp_path / "cache"
    csv_path = tmp_path / "manifest.csv"
    manifest = refresh(photos.root, csv_path, progress=False).manifest
    before, _ = load_or_extract(manifest, lite0, cache, progress=False)
    target, source = manifest[0], manifest[2]
    manifest.abspath(target).write_bytes(manifest.abspath(source).read_bytes())
    stale = extract(manifest, lite0, progress=False)            # the old manifest: refused per image
    assert [f[0] for f in stale.failures] == [target.id] and "rescan" in stale.failures[0][2]
    rescanned = refresh(photos.root, csv_path, progress=False)
    assert rescanned.changes.changed == [target.path]
    after, status = load_or_extract(rescanned.manifest, lite0, cache, progress=False)
    assert status == "cache miss: images changed"
    row = {int(i): n for n, i in enumerate(after.ids)}
    assert np.allclose(after.vectors[row[target.id]], before.vectors[row[source.id]], atol=1e-5)
    assert not np.allclose(after.vectors[row[target.id]], before.vectors[row[target.id]], atol=1e-3)


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
    capsys.readouterr()
    assert main(["features", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing.csv'}: no such manifest file\n"


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


def test_cpu_defaults_and_device_recorded(photos, lite0):
    fs = extract(photos, lite0, device="cpu", progress=False)
    assert (fs.meta["device"], fs.meta["device_name"], fs.meta["batch_size"], fs.meta["num_workers"]) == \
        ("cpu", "cpu", 8, 0)
    with pytest.raises(ValueError, match="device 'tpu'"):
        extract(photos, lite0, device="tpu", progress=False)


def test_cache_is_keyed_by_device(photos, lite0, tmp_path):
    cache = tmp_path / "cache"
    load_or_extract(photos, lite0, cache, device="cpu", progress=False)
    meta = json.loads((cache / "features.json").read_text())
    assert meta["device"] == "cpu"
    (cache / "features.json").write_text(json.dumps({**meta, "device": "cuda"}))   # made on a GPU
    assert load_or_extract(photos, lite0, cache, device="cpu", progress=False)[1] == "cache miss: device changed"
    assert load_or_extract(photos, lite0, cache, device="cpu", progress=False)[1] == "cache hit"


@pytest.mark.gpu
def test_extraction_on_the_gpu_matches_the_cpu(photos, lite0):
    from helpers.features import _workers_that_fit
    from helpers.devices import cpu_cores

    cpu = extract(photos, lite0, device="cpu", progress=False)
    gpu = extract(photos, lite0, device="cuda", progress=False)
    workers = _workers_that_fit(cpu_cores(), 64, lite0, 1)   # every core, unless /dev/shm is small (uint8 crops)
    assert (gpu.meta["device"], gpu.meta["batch_size"], gpu.meta["num_workers"]) == ("cuda", 64, workers)
    assert np.array_equal(gpu.ids, cpu.ids) and gpu.vectors.dtype == np.float32
    assert next(lite0.model.parameters()).device.type == "cpu", "the backbone goes back where it was"
    cos = (normalize(gpu.vectors) * normalize(cpu.vectors)).sum(axis=1)
    assert cos.min() > 0.99, cos   # cuDNN may use TF32 for "fp32" convolutions (torch's default)
    half = extract(photos, lite0, device="cuda", precision="fp16", progress=False)
    cos = (normalize(half.vectors) * normalize(gpu.vectors)).sum(axis=1)
    assert half.meta["precision"] == "fp16" and 0.98 < cos.min() and cos.max() < 1 - 1e-7, cos


def test_gpu_workers_fit_in_shared_memory(monkeypatch, lite0):
    from collections import namedtuple

    from helpers import features

    usage = namedtuple("usage", "total used free")
    batch_bytes = 64 * 3 * 224 * 224 * 4
    monkeypatch.setattr(features.shutil, "disk_usage", lambda path: usage(0, 0, 64 * 2**20))
    assert features._workers_that_fit(16, 64, lite0) == 0      # a container's 64 MB /dev/shm
    monkeypatch.setattr(features.shutil, "disk_usage", lambda path: usage(0, 0, 20 * batch_bytes))
    assert features._workers_that_fit(16, 64, lite0) == 5      # half of it, 2 batches a worker
    assert features._workers_that_fit(16, 64, lite0, 1) == 16  # uint8 crops: a quarter of the bytes
    monkeypatch.setattr(features.shutil, "disk_usage", lambda path: usage(0, 0, 2**40))
    assert features._workers_that_fit(16, 64, lite0) == 16


@pytest.fixture
def odd_jpegs(photos):
    """The photos plus JPEGs that must not take the fast path: EXIF-rotated, progressive, grey."""
    cat = Image.fromarray(skimage.data.chelsea()).resize((200, 150))
    exif = Image.Exif()
    exif[0x0112] = 6   # rotate 90 degrees when shown
    cat.save(photos.root / "rotated.jpg", exif=exif)
    cat.save(photos.root / "progressive.jpg", progressive=True)
    cat.convert("L").save(photos.root / "grey.jpg")
    return scan(photos.root, progress=False).manifest


def test_plain_jpeg_takes_only_baseline_rgb_jpegs(odd_jpegs):
    from helpers.decoding import plain_jpeg

    verdict = {e.path.split("/")[-1]: plain_jpeg(odd_jpegs.abspath(e).read_bytes()) for e in odd_jpegs}
    assert verdict == {"0_chelsea.jpg": True, "1_coffee.png": False, "2_rocket.jpg": True,
                       "3_astronaut.png": False, "4_hubble_deep_field.jpg": True,
                       "5_immunohistochemistry.jpg": True, "grey.jpg": False, "progressive.jpg": False,
                       "rotated.jpg": False}, verdict
    whole = odd_jpegs.abspath(list(odd_jpegs)[0]).read_bytes()
    assert not plain_jpeg(whole[:-100]) and not plain_jpeg(b"\xff\xd8 not a jpeg \xff\xd9")


@pytest.mark.parametrize("decoder", ["tensor", "nvjpeg"])
def test_tensor_decoders_give_the_pil_features(odd_jpegs, lite0, decoder, monkeypatch):
    """The GPU's decoders, run on the CPU (nvjpeg's batch decoding with decode_jpeg on the CPU):
    same ids, features at cosine > 0.999 image by image (a rotation left out would fail)."""
    from helpers import decoding

    monkeypatch.setattr(decoding, "decoder_problem", lambda decoder, device: "")
    pil = extract(odd_jpegs, lite0, device="cpu", normalize=True, progress=False)
    fast = extract(odd_jpegs, lite0, device="cpu", decoder=decoder, normalize=True, batch_size=4,
                   num_workers=1, progress=False)
    assert np.array_equal(fast.ids, pil.ids) and not fast.failures
    assert fast.meta["decoder"] == decoder and fast.meta["decode"] == decoding.decode_mode(lite0, False, decoder)
    assert fast.meta["decode"] != pil.meta["decode"] == "full"
    cos = (fast.vectors * pil.vectors).sum(axis=1)
    assert cos.min() > 0.999, cos
    assert not np.array_equal(fast.vectors, pil.vectors)   # it did take another route


@pytest.mark.parametrize("decoder", ["tensor", "nvjpeg"])
def test_tensor_decoders_record_broken_images_as_pil_does(photos, lite0, decoder, monkeypatch):
    from helpers import decoding

    monkeypatch.setattr(decoding, "decoder_problem", lambda decoder, device: "")
    entries = list(photos)
    for i, data in ((0, photos.abspath(entries[0]).read_bytes()[:300]),            # truncated JPEG
                    (2, b"\xff\xd8" + b"\x00" * 500 + b"\xff\xd9")):            # JPEG markers, no image
        photos.abspath(entries[i]).write_bytes(data)
        entries[i] = dataclasses.replace(entries[i], sha256=hashlib.sha256(data).hexdigest())
    broken = Manifest(photos.root, entries)
    pil = extract(broken, lite0, device="cpu", batch_size=4, progress=False)
    fast = extract(broken, lite0, device="cpu", decoder=decoder, batch_size=4, progress=False)
    assert fast.failures == pil.failures and [f[0] for f in fast.failures] == [entries[0].id, entries[2].id]
    assert np.array_equal(fast.ids, pil.ids) and len(fast) == 4


def test_decode_jpegs_refuses_image_by_image(photos):
    import torch

    from helpers.decoding import decode_jpegs

    good = torch.frombuffer(bytearray(photos.abspath(list(photos)[0]).read_bytes()), dtype=torch.uint8)
    bad = torch.frombuffer(bytearray(b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9"), dtype=torch.uint8)
    out = decode_jpegs([good, bad, good], "cpu")
    assert out[1] is None and out[0].shape == out[2].shape == (3, 120, 160)


def test_pick_decoder_defaults_and_fallbacks(monkeypatch):
    from helpers import decoding
    from helpers.decoding import GPU_DECODER, decoder_problem, pick_decoder

    assert decoder_problem("tensor", "cpu") == "" and "CUDA" in decoder_problem("nvjpeg", "cpu")
    assert pick_decoder(None, "cpu") == ("pil", "")   # the CPU path is unchanged
    decoder, why = pick_decoder("nvjpeg", "cpu")
    assert decoder == "tensor" and "nvJPEG decodes on a CUDA GPU" in why
    with pytest.raises(ValueError, match="jpeg_draft decodes with PIL"):
        pick_decoder("tensor", "cpu", jpeg_draft=True)
    with pytest.raises(ValueError, match="decoder 'dali'"):
        pick_decoder("dali", "cpu")
    monkeypatch.setattr(decoding, "decoder_problem", lambda decoder, device: "")
    assert pick_decoder(None, "cuda") == (GPU_DECODER, "") and pick_decoder(None, "cuda", True)[0] == "pil"
    monkeypatch.setattr(decoding, "decoder_problem", lambda decoder, device: "no image extension")
    assert pick_decoder("nvjpeg", "cuda")[0] == "pil"


def test_cache_is_keyed_by_decoder(photos, lite0, tmp_path):
    cache = tmp_path / "cache"
    load_or_extract(photos, lite0, cache, device="cpu", progress=False)
    assert load_or_extract(photos, lite0, cache, device="cpu", decoder="tensor",
                           progress=False)[1] == "cache miss: decoding changed"
    assert load_or_extract(photos, lite0, cache, device="cpu", decoder="tensor", progress=False)[1] == "cache hit"


def test_workers_run_torch_with_one_thread():
    import torch

    from helpers.features import _one_thread_per_worker

    before = torch.get_num_threads()
    try:
        _one_thread_per_worker(1, 0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cli_takes_fp16_and_refuses_it_on_the_cpu(photos, tmp_path, capsys):
    csv_path = photos.save(tmp_path / "manifest.csv")
    assert main(["features", str(csv_path), "--out", str(tmp_path / "f.npy"), "--backbone",
                 "efficientnet_lite0", "--precision", "fp16", "--quiet"]) == 2
    assert "precision 'fp16' is for GPUs" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.parametrize("decoder", ["tensor", "nvjpeg"])
def test_gpu_decoders_match_the_cpu(odd_jpegs, lite0, decoder):
    cpu = extract(odd_jpegs, lite0, device="cpu", normalize=True, progress=False)
    gpu = extract(odd_jpegs, lite0, device="cuda", decoder=decoder, normalize=True, progress=False)
    assert gpu.meta["decoder"] == decoder, "nvJPEG fell back: see the warning"
    assert np.array_equal(gpu.ids, cpu.ids) and not gpu.failures
    cos = (gpu.vectors * cpu.vectors).sum(axis=1)
    assert cos.min() > 0.99, cos   # cuDNN may use TF32 for "fp32" convolutions (torch's default)
