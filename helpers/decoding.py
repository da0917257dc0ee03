"""How extraction decodes images: a Dataset over a manifest and the decoders it can use.

"pil" (the CPU's default) decodes with PIL (`images.open_rgb`) and runs the backbone's transform
in the workers (float crops: 4 bytes a value through shared memory); "tensor" (a GPU's default)
has the workers decode plain JPEGs with torchvision's libjpeg-turbo and resize them as uint8
tensors, then scales and normalises the crops on the device; "nvjpeg" (opt-in) has the workers
only read the files and the GPU decode the JPEGs in batches (torchvision.io.decode_jpeg on CUDA),
resize and normalise them. Anything not a plain baseline RGB JPEG (EXIF rotation, other modes,
other formats) still goes through `open_rgb`. The decoder is part of the features' cache key (the
"decode" entry). `benchmarks/bench_gpu.py` measures the decoders against each other.
"""

from __future__ import annotations

import functools
import hashlib
import io
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .backbones import Backbone
from .fileio import first_line
from .images import MAX_PIXELS, ImageLoadError, open_rgb
from .manifest import Manifest

#: Ways to decode; the CPU always uses "pil" unless told otherwise.
DECODERS = ("pil", "tensor", "nvjpeg")
GPU_DECODER = "tensor"
#: A JPEG decoded at reduced scale keeps a short side of at least DRAFT_GAP x the backbone's resize.
DRAFT_GAP = 2


def decode_mode(backbone: Backbone, jpeg_draft: bool, decoder: str = "pil") -> str:
    """How images are decoded, as features' metadata records it (and the cache compares)."""
    if jpeg_draft:
        return f"jpeg draft, short side >= {min_side(backbone)}"
    return {"pil": "full", "tensor": "full, torchvision decode_jpeg and uint8 resize in the workers",
            "nvjpeg": "full, nvJPEG decode and resize on the GPU"}[decoder]


def min_side(backbone: Backbone) -> int:
    """The short side a JPEG keeps when decoded at reduced scale: twice the backbone's resize (as
    PIL's `thumbnail` does), so that the resize still filters what the decoder's scaling leaves."""
    return DRAFT_GAP * max(backbone.preprocessing["resize"])


def _tiny_jpeg() -> torch.Tensor:
    buf = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 100, 50)).save(buf, "JPEG")
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


@functools.lru_cache(maxsize=None)
def decoder_problem(decoder: str, device: str) -> str:
    """Why `decoder` cannot run on `device` here ('' when it can): it decodes a tiny JPEG the way
    extraction would (torchvision without its image extension, or without nvJPEG, fails here)."""
    if decoder == "pil":
        return ""
    if decoder == "nvjpeg" and not device.startswith("cuda"):
        return "nvJPEG decodes on a CUDA GPU"
    try:
        where = device if decoder == "nvjpeg" else "cpu"
        image = decode_jpeg([_tiny_jpeg()], mode=ImageReadMode.RGB, device=where)[0]
        if tuple(image.shape) != (3, 8, 16):
            return f"decode_jpeg gave shape {tuple(image.shape)} for a 16x8 RGB JPEG"
    except Exception as err:  # no image extension, no nvJPEG, a CUDA error: all mean "not here"
        return first_line(err, typed=True)
    return ""


def pick_decoder(decoder: str | None, device: str, jpeg_draft: bool = False) -> tuple[str, str]:
    """The decoder an extraction uses on `device`, and why it is not the one asked for ('' when it
    is). None picks the device's default ("pil" on the CPU and with jpeg_draft, else GPU_DECODER);
    one that cannot run here falls back to "tensor", then "pil"."""
    if decoder is None:
        decoder = "pil" if jpeg_draft or not device.startswith("cuda") else GPU_DECODER
    if decoder not in DECODERS:
        raise ValueError(f"decoder {decoder!r}: use one of {', '.join(DECODERS)}")
    if jpeg_draft and decoder != "pil":
        raise ValueError("jpeg_draft decodes with PIL: use decoder='pil' (or None)")
    problem = decoder_problem(decoder, device)
    if not problem:
        return decoder, ""
    fallback = "tensor" if decoder == "nvjpeg" and not decoder_problem("tensor", device) else "pil"
    return fallback, f"decoder {decoder!r} cannot run here ({problem}); decoding with {fallback!r}"


def plain_jpeg(data: bytes) -> bool:
    """Whether `data` is a complete baseline RGB JPEG that `open_rgb` would only decode: no EXIF
    rotation, no other mode, not progressive, not too large. Everything else goes to `open_rgb`."""
    if not (data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")):   # truncated: PIL says so
        return False
    try:
        with Image.open(io.BytesIO(data)) as img:   # reads the header only
            return (img.format == "JPEG" and img.mode == "RGB" and not img.info.get("progressive")
                    and img.info.get("adobe_transform", 1) == 1 and 0 < img.width * img.height <= MAX_PIXELS
                    and img.getexif().get(0x0112, 1) == 1)
    except Exception:  # anything odd: open_rgb decides, and says why if it fails
        return False


class TensorPreprocessing:
    """The backbone's preprocessing on uint8 (..., 3, H, W) tensors, on any device: `crop` resizes
    (antialiased, the preset's interpolation, short side rule) and centre-crops, still uint8;
    `normalise` scales to [0, 1] and normalises, as the backbone's transform does."""

    def __init__(self, preprocessing: dict):
        self.resize, self.size = list(preprocessing["resize"]), list(preprocessing["crop"])
        self.interpolation = InterpolationMode(preprocessing["interpolation"])
        self.antialias = preprocessing["antialias"]
        self.mean, self.std = preprocessing["mean"], preprocessing["std"]

    def crop(self, images: torch.Tensor) -> torch.Tensor:
        resized = TF.resize(images, self.resize, interpolation=self.interpolation, antialias=self.antialias)
        return TF.center_crop(resized, self.size)

    def crop_each(self, images: list[torch.Tensor]) -> torch.Tensor:
        """(N, 3, crop, crop) from images of any sizes, resized in groups of one size."""
        out: list[torch.Tensor | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(tuple(img.shape), []).append(i)
        for where in groups.values():
            for i, crop in zip(where, self.crop(torch.stack([images[i] for i in where]))):
                out[i] = crop
        return torch.stack(out)

    def stats(self, device: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std as (3, 1, 1) tensors on `device`: made once, not a copy (and a wait) a batch."""
        return tuple(torch.tensor(v, device=device).view(-1, 1, 1) for v in (self.mean, self.std))

    def normalise(self, batch: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return batch.float().div_(255).sub_(stats[0]).div_(stats[1])


class ImageDataset(Dataset):
    """Manifest entries as (id, tensor, None), or (id, None, reason) when the image fails.

    decoder "pil": the tensor is `transform(open_rgb(...))`; min_side is passed to `open_rgb`
    (JPEGs decoded at reduced scale), or None for full decoding. "tensor": a uint8 crop made by
    `pre`. "nvjpeg": a plain JPEG's bytes (1-D uint8, for the GPU to decode), else a uint8 crop.
    """

    def __init__(self, manifest: Manifest, transform, min_side: int | None = None,
                 decoder: str = "pil", pre: TensorPreprocessing | None = None):
        self.items = [(e.id, str(manifest.abspath(e)), e.sha256) for e in manifest]
        self.transform = transform
        self.min_side = min_side
        self.decoder, self.pre = decoder, pre

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        id_, path, sha = self.items[i]
        try:
            data = Path(path).read_bytes()   # read once: hashed, then decoded from memory
            if hashlib.sha256(data).hexdigest() != sha:
                return id_, None, "file changed since the manifest was made; rescan the folder"
            if self.decoder == "pil":
                return id_, self.transform(open_rgb(path, min_side=self.min_side, data=data)), None
            return id_, self._tensor(data, path), None
        except OSError as err:
            return id_, None, f"cannot read file ({err.strerror or err})"
        except ImageLoadError as err:
            return id_, None, err.reason
        except Exception as err:  # one bad file must not stop the run: record it, whatever it was
            return id_, None, f"{type(err).__name__}: {err}"

    def _tensor(self, data: bytes, path: str) -> torch.Tensor:
        image = None
        if plain_jpeg(data):
            encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            if self.decoder == "nvjpeg":
                return encoded
            try:
                image = decode_jpeg(encoded, mode=ImageReadMode.RGB)
            except RuntimeError:
                image = None   # open_rgb decides, and says why if it fails
        if image is None:
            image = TF.pil_to_tensor(open_rgb(path))
        return self.pre.crop(image)


class EncodedBatch(NamedTuple):
    """A batch for the GPU to decode: the JPEGs' bytes end to end, their lengths, the crops the
    workers made of the other images, and for each image in order whether it is encoded."""

    encoded: torch.Tensor
    sizes: list[int]
    crops: torch.Tensor | None
    is_encoded: list[bool]


def collate(items):
    """Stack the images that loaded (or gather JPEG bytes for the GPU); pass the failures through."""
    ok = [(i, x) for i, x, _ in items if x is not None]
    failed = [(i, reason) for i, x, reason in items if x is None]
    tensors = [x for _, x in ok]
    if not ok:
        batch = None
    elif all(x.dim() == 3 for x in tensors):
        batch = torch.stack(tensors)
    else:
        encoded = [x for x in tensors if x.dim() == 1]
        crops = [x for x in tensors if x.dim() == 3]
        batch = EncodedBatch(torch.cat(encoded), [len(x) for x in encoded],
                             torch.stack(crops) if crops else None, [x.dim() == 1 for x in tensors])
    return [i for i, _ in ok], batch, failed


def decode_jpegs(encoded: list[torch.Tensor], device: str) -> list[torch.Tensor | None]:
    """JPEG bytes decoded on `device` (nvJPEG on a GPU), in one batch; when the batch fails, one
    by one, None for each image the decoder refuses."""
    try:
        return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
    except Exception:  # which image? try them one at a time
        out = []
        for data in encoded:
            try:
                out.append(decode_jpeg([data], mode=ImageReadMode.RGB, device=device)[0])
            except Exception:
                out.append(None)
        return out


def decode_on_device(batch: EncodedBatch, ids: list[int], pre: TensorPreprocessing, device: str,
                      files: dict[int, str]) -> tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]:
    """uint8 crops of an EncodedBatch on `device`, the ids kept and the failures (id, reason): what
    the decoder refuses is decoded on the CPU by `open_rgb`, which says why when it fails too."""
    decoded = iter(decode_jpegs(list(batch.encoded.split(batch.sizes)), device))
    crops = iter(batch.crops.to(device) if batch.crops is not None else ())
    kept, images, failed = [], [], []   # images: (tensor, whether it still needs resizing)
    for id_, encoded in zip(ids, batch.is_encoded):
        image = next(decoded) if encoded else next(crops)
        if image is None:
            try:
                image = TF.pil_to_tensor(open_rgb(files[id_])).to(device)
            except ImageLoadError as err:
                failed.append((id_, err.reason))
                continue
            except Exception as err:  # whatever it was, recorded
                failed.append((id_, f"{type(err).__name__}: {err}"))
                continue
        kept.append(id_)
        images.append((image, encoded))
    if not images:
        return None, kept, failed
    whole = [image for image, encoded in images if encoded]
    cropped = iter(pre.crop_each(whole) if whole else ())
    return torch.stack([next(cropped) if encoded else image for image, encoded in images]), kept, failed
