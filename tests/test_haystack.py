"""helpers.haystack: real images as a haystack (SIMSEARCH_HAYSTACK=real) and the check of distractors."""

import numpy as np
import pytest
from PIL import Image

from helpers import datasets, haystack
from helpers.database import CourseDatabase
from helpers.datasets import DatasetUnavailable
from helpers.distractors import DISTRACTOR_ID_START, synthetic_features
from helpers.features import FeatureSet
from helpers.manifest import Entry, Manifest
from helpers.settings import SettingsError, load_settings

from .test_datasets import write_idx
from .test_explorer import make_tiny_backbone


@pytest.fixture
def debian(tmp_path, monkeypatch):
    """Stand-ins for the two Debian packages: a Fashion-MNIST train split of 6 images a class
    and 10 clip-art PNGs in two folders; the folder steps made small to match."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 6)
    write_idx(tmp_path / "idx" / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (60, 28, 28)))
    write_idx(tmp_path / "idx" / "train-labels-idx1-ubyte.gz", labels)
    clipart = tmp_path / "openclipart"
    for i in range(10):
        (clipart / ("animals" if i < 5 else "food")).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 30, 4), dtype=np.uint8), "RGBA").save(
            clipart / ("animals" if i < 5 else "food") / f"art_{i}.png")
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_DIR", tmp_path / "idx")
    monkeypatch.setattr(haystack, "OPENCLIPART_DIR", clipart)
    monkeypatch.setattr(haystack, "FASHION_STEPS", (3, 6))
    return tmp_path


def test_real_haystack_fills_from_fashion_then_clipart(debian, capsys):
    backbone = make_tiny_backbone()
    vectors, entries = haystack.real_haystack(backbone, debian / "data", 65, progress=False)
    assert vectors.shape == (65, 48) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert [e.id for e in entries] == list(range(DISTRACTOR_ID_START, DISTRACTOR_ID_START + 65))
    assert [e.label.split(":")[0] for e in entries] == ["fashion_mnist"] * 60 + ["openclipart"] * 5
    assert {e.label for e in entries[60:]} == {"openclipart:animals"}
    manifest = Manifest(debian, entries)
    assert all(manifest.abspath(e).is_file() for e in entries)   # absolute paths: results show the images
    out = capsys.readouterr().out
    assert "60 of 60 Fashion-MNIST" in out and "5 of 10 Openclipart" in out and "extracted in" in out
    again, _ = haystack.real_haystack(backbone, debian / "data", 65, progress=False)
    assert np.array_equal(again, vectors) and capsys.readouterr().out.count("cache hit") == 2


def test_real_haystack_without_either_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_DIR", tmp_path / "absent")
    monkeypatch.setattr(haystack, "OPENCLIPART_DIR", tmp_path / "absent_too")

    def offline(*args, **kwargs):
        raise OSError("offline")
    monkeypatch.setattr("torchvision.datasets.FashionMNIST", offline)
    with pytest.raises(DatasetUnavailable, match="apt-get install dataset-fashion-mnist openclipart-png"):
        haystack.real_haystack(make_tiny_backbone(), tmp_path / "data", 10, progress=False)


def test_course_database_with_real_images_instead_of_distractors(debian, monkeypatch):
    import helpers.distractors as dist
    monkeypatch.setitem(dist.DATABASE_SIZE, "quick", 50)
    rng = np.random.default_rng(1)
    entries = [Entry(i, f"l{i % 2}/{i}.jpg", "0" * 64, 1, 1, 1, "JPEG", f"l{i % 2}") for i in range(20)]
    manifest = Manifest(debian, entries)
    fs = FeatureSet(np.abs(rng.standard_normal((20, 48))).astype(np.float32), np.arange(20, dtype=np.int64))
    settings = load_settings({"SIMSEARCH_SCALE": "quick", "SIMSEARCH_HAYSTACK": "real",
                              "SIMSEARCH_DATA_DIR": str(debian / "data")})
    db = CourseDatabase.from_settings(settings, fs, manifest, make_tiny_backbone(), progress=False)
    assert db.sizes.n_database == 50 and db.sizes.n_distractors == 40 and "40 real haystack images" in str(db.sizes)
    extra = db.ids[db.ids >= DISTRACTOR_ID_START]
    assert len(extra) == 40 and all(db.manifest.abspath(int(i)).is_file() for i in extra)
    assert db.manifest.entry(int(extra[0])).label.startswith("fashion_mnist:")
    assert not set(db.query_ids) & set(db.ids)
    np.testing.assert_allclose(np.linalg.norm(db.xb, axis=1), 1, rtol=1e-5)
    monkeypatch.setitem(dist.DATABASE_SIZE, "quick", 10)     # the real images fill it alone: no haystack needed
    full = CourseDatabase.from_settings(settings, fs, manifest, make_tiny_backbone(), progress=False)
    assert full.sizes.n_distractors == 0 and len(full.xb) == 10 and full.manifest.entries == manifest.entries
    monkeypatch.setitem(dist.DATABASE_SIZE, "quick", 50)
    synthetic = CourseDatabase.from_settings(load_settings({"SIMSEARCH_SCALE": "quick"}), fs, manifest, None)
    assert synthetic.manifest is manifest and "40 distractors" in str(synthetic.sizes)


def test_haystack_setting_is_checked():
    assert load_settings({}).haystack == "synthetic"
    assert load_settings({"SIMSEARCH_HAYSTACK": "Real"}).haystack == "real"
    with pytest.raises(SettingsError, match="SIMSEARCH_HAYSTACK"):
        load_settings({"SIMSEARCH_HAYSTACK": "hay"})


def test_directions_for_counts_the_variance_held():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 3)) @ rng.standard_normal((3, 40))   # variance in 3 directions only
    assert haystack.directions_for(x, 0.999) <= 3
    stds = np.sqrt(np.array([9.0, 0.5, 0.5] + [0.0] * 37))
    assert haystack.directions_for(rng.standard_normal((4000, 40)) * stds, 0.85) == 1   # 9 of 10


def test_compare_haystacks_builds_a_real_and_a_distractor_database():
    x, _ = synthetic_features(2300, 32, n_classes=10, seed=6)
    queries, real = x[:100] / np.linalg.norm(x[:100], axis=1, keepdims=True), x[100:]
    results = haystack.compare_haystacks(real, queries, n_fit=90, tails=("power_law", "none"),
                                         nprobes=(1, 4, 64), efs=(8, 64), compressed=False)
    assert list(results) == ["A", "B power_law", "B none"] and all(r["n"] == 2200 for r in results.values())
    unit = real / np.linalg.norm(real, axis=1, keepdims=True)
    assert results["A"]["nearest cosine, median"] == pytest.approx(np.median((queries @ unit.T).max(axis=1)), abs=1e-5)
    for r in results.values():
        ivf = [v for key, v in r["recall"].items() if key.startswith("IVF")]
        assert ivf == sorted(ivf) and ivf[-1] > 0.999          # nprobe >= nlist (14) is exact search
