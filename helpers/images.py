"""Opening any image file safely as 8-bit RGB.

Every failure (empty, truncated, not an image, decompression bomb, a header that lies about
the size) raises one exception type, `ImageLoadError`, whose message says what is wrong.
The file's content decides its format, never its suffix.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Images above this many pixels are refused (about 80 megapixels, a 10k x 8k photo).
MAX_PIXELS = 80_000_000


class ImageLoadError(Exception):
    """An image file that cannot be used, with the reason in plain words."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    mode: str
    frames: int


def _decode(path: Path, max_pixels: int, min_side: int | None = None,
            data: bytes | None = None) -> Image.Image:
    """Open, check the size before decoding, then decode the whole first frame (from `data`, the
    file's bytes already read, when given: `path` then only names the file in errors).

    With `min_side`, a JPEG is decoded at the strongest reduction of 1/2, 1/4, 1/8 that keeps
    its short side >= min_side (libjpeg scales while it decodes: far less work than a full decode).
    """
    try:
        if (len(data) if data is not None else path.stat().st_size) == 0:
            raise ImageLoadError(path, "empty file (0 bytes)")
    except OSError as err:
        raise ImageLoadError(path, f"cannot read file ({err.strerror or err})") from err
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(path if data is None else io.BytesIO(data))
        except UnidentifiedImageError as err:
            raise ImageLoadError(path, "not an image (unknown or unsupported format)") from err
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageLoadError(path, f"decompression bomb refused ({err})") from err
        except OSError as err:
            raise ImageLoadError(path, f"cannot read file ({err})") from err
    try:
        w, h = img.size
        if w <= 0 or h <= 0:
            raise ImageLoadError(path, f"header gives an impossible size {w}x{h}")
        if w * h > max_pixels:
            raise ImageLoadError(
                path, f"too large: {w}x{h} = {w * h:,} pixels > limit {max_pixels:,} "
                "(decompression-bomb guard; raise max_pixels if the file is trusted)")
        img.seek(0)  # animated GIF/PNG/WebP, multi-page TIFF: the first frame
        if min_side:   # JPEG (and MPO, phones' JPEGs) only; other formats ignore draft()
            img.draft(None, (min_side, min_side))   # libjpeg keeps both sides >= min_side
        img.load()   # decode now: truncated data fails here, not later
    except ImageLoadError:
        img.close()
        raise
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as err:
        img.close()
        text = str(err) or type(err).__name__
        reason = "truncated file" if "truncat" in text.lower() else "corrupt image data"
        raise ImageLoadError(path, f"{reason} ({text})") from err
    return img


def probe(path: str | Path, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Decode `path` completely (so broken files fail now) and describe it."""
    path = Path(path)
    img = _decode(path, max_pixels)
    with img:
        return ImageInfo(format=img.format or "unknown", width=img.width, height=img.height,
                         mode=img.mode, frames=getattr(img, "n_frames", 1))


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: alpha composited on white, 16-bit and float scaled."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if mode.startswith("I;16") and hi <= 65535 and lo >= 0:
            lo, hi = 0.0, 65535.0  # keep the 16-bit scale rather than stretch contrast
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif mode == "P":
        return img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def open_rgb(path: str | Path, max_pixels: int = MAX_PIXELS, min_side: int | None = None,
             data: bytes | None = None) -> Image.Image:
    """Open an image file as an 8-bit RGB PIL image, upright as its EXIF says.

    `min_side`: the caller will shrink the image so its short side is this long anyway, so a
    JPEG may be decoded at reduced scale (1/2 to 1/8) with at least that many pixels left on its
    short side: much faster for large photos; pixel values differ slightly from a full decode
    followed by resizing. None (default): full-size decode.
    `data`: the file's bytes, when the caller has read them already (feature extraction hashes
    them): decoded from memory, so the file is read once and what is decoded is what was hashed.
    Raises `ImageLoadError` with a readable reason for anything that is not a usable image.
    """
    path = Path(path)
    img = _decode(path, max_pixels, min_side, data)
    try:
        upright = ImageOps.exif_transpose(img)
        rgb = to_rgb(upright)
        rgb.load()
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageLoadError(path, f"cannot convert to RGB ({err})") from err
    finally:
        img.close()
    return rgb
