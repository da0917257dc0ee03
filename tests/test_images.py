from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from helpers.datasets import write_problem_files
from helpers.images import ImageLoadError, open_rgb, probe, to_rgb


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("problems")
    return folder, write_problem_files(folder)


def test_every_odd_mode_opens_as_8bit_rgb(problems):
    folder, expect = problems
    good = [n for n, outcome in expect.items() if outcome == "ok"]
    assert len(good) >= 8
    for name in good:
        img = open_rgb(folder / name)
        assert img.mode == "RGB", name
        assert np.asarray(img).dtype == np.uint8
        from_bytes = open_rgb(folder / name, data=(folder / name).read_bytes())   # as extraction reads
        assert np.array_equal(np.asarray(from_bytes), np.asarray(img)), name


@pytest.mark.parametrize("name, word", [("empty.jpg", "empty"), ("truncated.jpg", "truncated"),
                                        ("notes.jpg", "not an image"), ("bomb.png", "bomb")])
def test_broken_files_raise_one_type_with_a_reason(problems, name, word):
    folder, expect = problems
    assert expect[name] == word
    with pytest.raises(ImageLoadError) as info:
        open_rgb(folder / name)
    assert word in info.value.reason
    assert info.value.path.endswith(name)
    with pytest.raises(ImageLoadError, match=word) as info:
        open_rgb(folder / name, data=(folder / name).read_bytes())
    assert info.value.path.endswith(name)
    with pytest.raises(ImageLoadError):
        probe(folder / name)


def test_exif_orientation_is_applied(problems):
    folder, _ = problems
    assert probe(folder / "exif_rotated.jpg").width == 96   # stored landscape
    assert open_rgb(folder / "exif_rotated.jpg").size == (64, 96)   # shown portrait


def test_content_decides_format_not_suffix(problems):
    folder, _ = problems
    assert probe(folder / "really_a_png.jpg").format == "PNG"


def test_alpha_is_composited_on_white(tmp_path):
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert open_rgb(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)
    Image.new("LA", (4, 4), (0, 255)).save(tmp_path / "opaque_black.png")
    assert open_rgb(tmp_path / "opaque_black.png").getpixel((0, 0)) == (0, 0, 0)


def test_sixteen_bit_keeps_its_scale():
    arr = np.full((4, 4), 257 * 100, dtype=np.uint16)  # 100 on the 8-bit scale, not stretched to 255
    assert to_rgb(Image.fromarray(arr)).getpixel((0, 0)) == (100, 100, 100)


def test_animated_gives_first_frame(problems):
    folder, _ = problems
    assert probe(folder / "animated.gif").frames == 2
    first = np.asarray(open_rgb(folder / "animated.gif"), dtype=float)
    still = np.asarray(open_rgb(folder / "palette.gif"), dtype=float)  # the same photo, one frame
    assert np.abs(first - still).mean() < np.abs(first - (255 - still)).mean() / 4


def test_too_many_pixels_refused_before_decoding(tmp_path):
    Image.new("RGB", (200, 200)).save(tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match="too large"):
        open_rgb(tmp_path / "big.png", max_pixels=10_000)


def test_missing_file_is_an_image_load_error(tmp_path):
    with pytest.raises(ImageLoadError, match="cannot read"):
        open_rgb(tmp_path / "nope.jpg")


def test_min_side_decodes_a_jpeg_smaller_but_never_below_it(tmp_path):
    photo = Image.fromarray(skimage.data.astronaut()).resize((1024, 768))   # 4:3, short side 768
    photo.save(tmp_path / "big.jpg", quality=90)
    photo.save(tmp_path / "big.png")
    full = open_rgb(tmp_path / "big.jpg")
    assert full.size == (1024, 768)                                       # default: full decode
    assert open_rgb(tmp_path / "big.jpg", min_side=232).size == (512, 384)  # 1/4 would give 192 < 232
    small = open_rgb(tmp_path / "big.jpg", min_side=96)
    assert small.size == (128, 96) and small.mode == "RGB"                  # 1/8, the most libjpeg does
    assert open_rgb(tmp_path / "big.jpg", min_side=768).size == (1024, 768)
    assert open_rgb(tmp_path / "big.png", min_side=96).size == (1024, 768)  # only JPEGs scale in the decoder
    shrunk = np.asarray(full.resize((128, 96), Image.Resampling.BOX), dtype=float)
    assert np.abs(np.asarray(small, dtype=float) - shrunk).mean() < 3      # the same picture, up to rounding


def test_min_side_keeps_exif_orientation(problems):
    folder, _ = problems
    assert open_rgb(folder / "exif_rotated.jpg", min_side=32).size == (32, 48)   # 1/2, still portrait
