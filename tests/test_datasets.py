import hashlib
from pathlib import Path

import numpy as np
import pytest

from helpers import datasets
from helpers.datasets import (DatasetUnavailable, available_sources, build_fashion_mnist,
                              build_photo_variants, make_variant)
from helpers.images import open_rgb
from helpers.manifest import scan


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


def test_fashion_mnist_subset_per_class(tmp_path):
    if not (datasets.DEBIAN_FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        with pytest.raises(DatasetUnavailable, match="dataset-fashion-mnist"):
            build_fashion_mnist(tmp_path / "fm", per_class=3, cache_dir=tmp_path / "offline-cache")
        pytest.skip("Debian's dataset-fashion-mnist is not installed; checked the clear error instead")
    folder, origin = build_fashion_mnist(tmp_path / "fm", per_class=3)
    assert "Debian" in origin
    m = scan(folder, progress=False).manifest
    assert m.label_counts() == {c: 3 for c in sorted(datasets.FASHION_CLASSES)}
    assert {(e.width, e.height) for e in m} == {(28, 28)}
