"""Sample data sets written into `data/`, built offline from files on this machine.

- `photo_variants` (the default): every real photo that ships inside installed packages
  (scikit-image, scikit-learn, matplotlib), each with a fixed number of seeded variants
  (crop, flip, rotation, scale, colour jitter, blur, JPEG re-encode), labelled by source photo.
  A near-duplicate retrieval set with ground truth; byte-identical on every run.
- `fashion_mnist`: labelled product images, from Debian's `dataset-fashion-mnist` files when
  present, else torchvision's download; a configurable subset written as PNG files per class.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import struct
import zlib
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from .fileio import atomic_write
from .images import open_rgb
from .settings import BUILTIN_DATASETS, REPO_ROOT, Settings


class DatasetUnavailable(RuntimeError):
    """A data set's source files cannot be found or fetched here."""


@dataclass(frozen=True)
class Source:
    name: str
    package: str
    relpath: str   # inside the installed package
    licence: str


SOURCES = (
    Source("astronaut", "skimage", "data/astronaut.png", "public domain (NASA)"),
    Source("brick", "skimage", "data/brick.png", "CC0 (CC0Textures)"),
    Source("camera", "skimage", "data/camera.png", "CC0 (Lav Varshney)"),
    Source("cell", "skimage", "data/cell.png", "CC0"),
    Source("chelsea", "skimage", "data/chelsea.png", "CC0 (Stefan van der Walt)"),
    Source("clock", "skimage", "data/clock_motion.png", "public domain (Stefan van der Walt)"),
    Source("coffee", "skimage", "data/coffee.png", "CC0 (Rachel Michetti)"),
    Source("coins", "skimage", "data/coins.png", "no known copyright restrictions (Brooklyn Museum)"),
    Source("grass", "skimage", "data/grass.png", "CC0 (DeviantArt linolafett)"),
    Source("gravel", "skimage", "data/gravel.png", "CC0 (CC0Textures)"),
    Source("hubble", "skimage", "data/hubble_deep_field.jpg", "public domain (NASA)"),
    Source("ihc", "skimage", "data/ihc.png", "no known copyright restrictions"),
    Source("retina", "skimage", "data/retina.jpg", "CC0 (Mikael Häggström)"),
    Source("rocket", "skimage", "data/rocket.jpg", "public domain (SpaceX)"),
    Source("text", "skimage", "data/text.png", "public domain"),
    Source("china", "sklearn", "datasets/images/china.jpg", "CC BY 2.0 (danielbuechele)"),
    Source("flower", "sklearn", "datasets/images/flower.jpg", "CC BY 2.0 (vultilion)"),
    Source("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
           "public domain (US Navy)"),
)

VARIANTS_PER_SOURCE = 10
MAX_SIDE = 384
JPEG_QUALITY = 90
OPERATIONS = ("crop", "flip", "rotate", "scale", "colour", "blur", "jpeg")


def source_path(src: Source) -> Path:
    spec = find_spec(src.package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailable(f"package {src.package!r} is not installed (needed for {src.name})")
    return Path(list(spec.submodule_search_locations)[0]) / src.relpath


def available_sources() -> list[Source]:
    return [s for s in SOURCES if find_spec(s.package) is not None and source_path(s).is_file()]


def _rng(*key: object) -> np.random.Generator:
    digest = hashlib.sha256(":".join(map(str, key)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _fit(img: Image.Image, max_side: int) -> Image.Image:
    scale = max_side / max(img.size)
    if scale >= 1:
        return img
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def _apply(img: Image.Image, op: str, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """One augmentation with seeded parameters; returns the image and a short description."""
    w, h = img.size
    if op == "crop":
        f = rng.uniform(0.6, 0.9)
        cw, ch = round(w * f), round(h * f)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return img.crop((x, y, x + cw, y + ch)), f"crop {f:.2f}"
    if op == "flip":
        return ImageOps.mirror(img), "flip"
    if op == "rotate":
        angle = float(rng.uniform(5, 15) * rng.choice([-1, 1]))
        rotated = img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False)
        m = 0.15  # crop the corners the rotation left empty
        return rotated.crop((round(w * m), round(h * m), round(w * (1 - m)), round(h * (1 - m)))), \
            f"rotate {angle:+.1f}"
    if op == "scale":
        f = rng.uniform(0.35, 0.7)
        return img.resize((max(8, round(w * f)), max(8, round(h * f))), Image.Resampling.BILINEAR), \
            f"scale {f:.2f}"
    if op == "colour":
        b, c, s = rng.uniform(0.7, 1.3, size=3)
        img = ImageEnhance.Brightness(img).enhance(b)
        img = ImageEnhance.Contrast(img).enhance(c)
        if img.mode == "RGB":
            img = ImageEnhance.Color(img).enhance(s)
        return img, f"colour b{b:.2f} c{c:.2f} s{s:.2f}"
    if op == "blur":
        r = rng.uniform(1.0, 3.0)
        return img.filter(ImageFilter.GaussianBlur(r)), f"blur {r:.1f}"
    if op == "jpeg":
        q = int(rng.integers(10, 30))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q)
        buf.seek(0)
        with Image.open(buf) as low:
            return low.convert(img.mode), f"jpeg q{q}"
    raise ValueError(f"unknown operation {op!r}")


def make_variant(img: Image.Image, source: str, index: int) -> tuple[Image.Image, str]:
    """Variant `index` of a photo: 0 is the photo itself, others combine 1 to 3 operations.

    The operation named first cycles through OPERATIONS so every kind appears for every photo.
    """
    if index == 0:
        return img, "original"
    rng = _rng(source, index)
    first = OPERATIONS[(index - 1) % len(OPERATIONS)]
    others = [op for op in OPERATIONS if op != first]
    at_least = 0 if index <= len(OPERATIONS) else 1  # second cycle: never repeat a lone "flip"
    extra = list(rng.choice(others, size=int(rng.integers(at_least, 3)), replace=False))
    ops = [first] + sorted(extra, key=OPERATIONS.index)
    done = []
    for op in ops:
        img, text = _apply(img, op, rng)
        done.append(text)
    return img, ", ".join(done)


def build_photo_variants(out_dir: str | Path, variants_per_source: int = VARIANTS_PER_SOURCE,
                         max_side: int = MAX_SIDE) -> Path:
    """Write `out_dir/<source>/<source>_NN.jpg` for every available source photo.

    Also writes `<out_dir>.csv` beside the folder: file, source, operations, licence.
    Existing files are overwritten with the same bytes; stray files are left alone.
    """
    out_dir = Path(out_dir)
    sources = available_sources()
    if not sources:
        raise DatasetUnavailable("no source photos found: install scikit-image, scikit-learn, matplotlib")
    rows = []
    for src in sources:
        base = _fit(open_rgb(source_path(src)), max_side)
        if _is_grey(base):  # keep grey photos grey: a mode the loader must handle
            base = base.convert("L")
        folder = out_dir / src.name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(variants_per_source):
            img, ops = make_variant(base, src.name, i)
            name = f"{src.name}_{i:02d}.jpg"
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=JPEG_QUALITY)
            _write_if_changed(folder / name, buf.getvalue())
            rows.append({"file": f"{src.name}/{name}", "source": src.name, "operations": ops,
                         "licence": src.licence})
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=["file", "source", "operations", "licence"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out_dir.with_suffix(".csv"), text.getvalue())
    return out_dir


def _is_grey(img: Image.Image) -> bool:
    arr = np.asarray(img.convert("RGB"), dtype=np.int16)
    return bool(np.abs(arr[..., 0] - arr[..., 1]).max() == 0 and np.abs(arr[..., 1] - arr[..., 2]).max() == 0)


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.read_bytes() == data:
        return
    atomic_write(path, data)


# --- Fashion-MNIST -------------------------------------------------------------------------

FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                   "bag", "ankle_boot")
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise DatasetUnavailable(f"{path}: not an IDX file of unsigned bytes")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion_arrays(split: str, cache_dir: Path) -> tuple[np.ndarray, np.ndarray, str]:
    prefix = "train" if split == "train" else "t10k"
    images = DEBIAN_FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz"
    labels = DEBIAN_FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if images.is_file() and labels.is_file():
        return _read_idx(images), _read_idx(labels), f"Debian's dataset-fashion-mnist ({DEBIAN_FASHION_DIR})"
    try:
        from torchvision.datasets import FashionMNIST
        ds = FashionMNIST(str(cache_dir), train=split == "train", download=True)
    except Exception as err:  # torchvision raises several types when offline
        raise DatasetUnavailable(
            "Fashion-MNIST not found: install Debian's package (apt-get install dataset-fashion-mnist) "
            f"or go online so torchvision can download it ({type(err).__name__}: {err})") from err
    return ds.data.numpy(), ds.targets.numpy(), f"torchvision download ({cache_dir})"


def build_fashion_mnist(out_dir: str | Path, per_class: int = 100, split: str = "test",
                        cache_dir: str | Path | None = None) -> tuple[Path, str]:
    """Write the first `per_class` images of each class as `out_dir/<class>/<split>_<index>.png`.

    Returns the folder and a sentence naming where the data came from.
    """
    out_dir = Path(out_dir)
    cache = Path(cache_dir) if cache_dir else out_dir.parent / "cache"
    images, labels, origin = _fashion_arrays(split, cache)
    for c, name in enumerate(FASHION_CLASSES):
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for idx in np.flatnonzero(labels == c)[:per_class]:
            buf = io.BytesIO()
            Image.fromarray(images[idx], "L").save(buf, "PNG")
            _write_if_changed(folder / f"{split}_{idx:05d}.png", buf.getvalue())
    return out_dir, origin


def ensure_dataset(settings: Settings) -> Path:
    """The image folder the settings name, built first when it is a built-in set."""
    folder = settings.image_dir
    if settings.dataset == "photo_variants":
        if not (folder.with_suffix(".csv")).is_file():
            build_photo_variants(folder)
    elif settings.dataset == "fashion_mnist":
        if not folder.is_dir():
            build_fashion_mnist(folder, per_class=30 if settings.quick else 300)
    elif not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "no such folder"
        raise DatasetUnavailable(
            f"SIMSEARCH_DATASET={settings.dataset!r}: {what} ({folder}; a relative path is read "
            f"from the project root {REPO_ROOT}). Use {' or '.join(BUILTIN_DATASETS)}, or the "
            "path of a folder of images.")
    return folder



# --- Files that test a loader: odd modes that must load, broken files that must be reported ----

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_problem_files(folder: str | Path, photo: str | Path | None = None) -> dict[str, str]:
    """Write awkward image files into `folder`; return {relative path: expected outcome}.

    The outcome is "ok" for files a robust loader must read (odd modes, misleading suffixes,
    EXIF rotation, animation) and otherwise a word the skip reason contains.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    src = open_rgb(photo or source_path(SOURCES[4])).resize((96, 64))  # chelsea, small
    expect: dict[str, str] = {}

    def save(name: str, img: Image.Image, fmt: str, outcome: str = "ok", **kw) -> None:
        img.save(folder / name, fmt, **kw)
        expect[name] = outcome

    save("grey.png", src.convert("L"), "PNG")
    save("grey_alpha.png", src.convert("LA"), "PNG")
    save("palette.gif", src.convert("P"), "GIF")
    rgba = src.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(src.size))  # transparent at the top
    save("transparent.png", rgba, "PNG")
    save("cmyk.jpg", src.convert("CMYK"), "JPEG")
    sixteen = (np.asarray(src.convert("L"), dtype=np.uint16) * 257)
    save("sixteen_bit.png", Image.fromarray(sixteen), "PNG")
    frames = [src, ImageOps.invert(src)]
    save("animated.gif", frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    save("exif_rotated.jpg", src, "JPEG", exif=exif)
    save("really_a_png.jpg", src, "PNG")  # the suffix lies; the content decides

    (folder / "empty.jpg").write_bytes(b"")
    expect["empty.jpg"] = "empty"
    buf = io.BytesIO()
    src.save(buf, "JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    expect["truncated.jpg"] = "truncated"
    (folder / "notes.jpg").write_text("this is text, not a photo\n")
    expect["notes.jpg"] = "not an image"
    bomb_header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    (folder / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", bomb_header)
                                      + _png_chunk(b"IEND", b""))
    expect["bomb.png"] = "bomb"
    return expect


MESSY_MARKER = ".made_by_helpers"


def build_messy_folder(folder: str | Path, manifest, limit: int = 24) -> dict[str, str]:
    """A small folder that shows how a scan copes with a messy collection (notebook 01_data_manifest): at most
    `limit` photos copied from `manifest` (never the whole of a user's folder), the awkward files
    of `write_problem_files` under `odd_files/`, a dangling symlink and hidden files.

    Returns {relative path: expected outcome} ("ok" or a word of the skip reason). `folder` is
    created; an existing one is replaced only if this function made it (it holds MESSY_MARKER),
    so a folder of the user's is never deleted.
    """
    import shutil

    folder = Path(folder)
    if folder.exists():
        if not (folder / MESSY_MARKER).is_file():
            raise FileExistsError(f"{folder} exists and was not made by build_messy_folder; "
                                  "choose another folder or delete it yourself")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MESSY_MARKER).write_text("made by helpers.datasets.build_messy_folder\n")
    expect = {MESSY_MARKER: "hidden"}
    for e in list(manifest)[:limit]:
        (folder / e.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(manifest.abspath(e), folder / e.path)
        expect[e.path] = "ok"
    photo = manifest.abspath(manifest[0]) if len(manifest) else None
    expect.update({f"odd_files/{name}": outcome
                   for name, outcome in write_problem_files(folder / "odd_files", photo).items()})
    (folder / "odd_files" / "link_to_nowhere.jpg").symlink_to(folder / "no_such_file.jpg")
    expect["odd_files/link_to_nowhere.jpg"] = "dangling symlink"
    (folder / ".DS_Store").write_bytes(b"macOS folder settings")
    expect[".DS_Store"] = "hidden"
    return expect
