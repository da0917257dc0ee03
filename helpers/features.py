"""Feature extraction: every image of a manifest through a backbone, in batches, into an
(N, d) float32 array aligned with the manifest ids; and a cache that is reused only when it
was made from the same images, backbone, weights, preprocessing and settings.

Images that fail to load are recorded (id, path, reason) and left out; they never stop a run.
Speed defaults were chosen by measurement on a 2-core CPU (see benchmarks/bench_features.py):
batches of 8 in channels_last memory layout (BatchNorms folded by `backbones`), decoding in the
main process (a DataLoader worker only competes with the model for the two cores), fp32.
bfloat16 autocast is an opt-in: about 2x faster on CPUs that compute bfloat16 natively (slower
on others), but on the photo-variants set it moves EfficientNet-Lite0's features to a cosine of
0.987 with fp32 (mean 0.998) and changes 3% of the nearest neighbours, so it is not the default.
`jpeg_draft=True` decodes large JPEGs at reduced scale (libjpeg's DCT scaling to 1/2, 1/4 or
1/8, keeping at least twice the resize's short side, as PIL's thumbnail does). Measured with
benchmarks/bench_jpeg_draft.py (Lite0, photos with a 1200-px short side): 1.4-1.5x faster, but
cosine to full decoding min 0.989 (mean 0.9994) and 4% of nearest neighbours change, so it is
an opt-in, like bfloat16. On photos no larger than the backbone needs it changes nothing.
On a GPU (`device="auto"` picks CUDA when torch sees it; notebook 07): model and batches on the
device in channels_last, batches of 64 decoded by DataLoader workers on every CPU core (decoding
is then the bottleneck) into pinned memory and copied without blocking; `fp16` autocast is an
opt-in there as bf16 is, measured against fp32 by benchmarks/bench_gpu.py. The device and the
precision are part of the cache key.
Decoding on a GPU machine (`decoder`): "pil" decodes with PIL and runs the backbone's transform in
the workers, as on the CPU (float crops: 4 bytes a value through shared memory); "tensor" (the GPU
default) has the workers decode plain JPEGs with torchvision's libjpeg-turbo and resize them as
uint8 tensors, then scales and normalises the crops on the device; "nvjpeg" (opt-in) has the
workers only read the files and the GPU decode the JPEGs in batches (torchvision.io.decode_jpeg on
CUDA), resize and normalise them. Anything not a plain baseline RGB JPEG (EXIF rotation, other
modes, other formats) still goes through `open_rgb`, and every DataLoader worker runs torch with one
thread (WORKER_THREADS: with torch's default each of 16 workers starts 16). Measured with
benchmarks/bench_gpu.py; the decoder is part of the cache key (the "decode" entry).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from .backbones import Backbone
from .devices import check_precision, cpu_cores, device_name, pick_device
from .fileio import atomic_write, first_line, timestamp
from .images import MAX_PIXELS, ImageLoadError, open_rgb
from .indexes import normalize as normalize_rows
from .manifest import Manifest

#: Batch size: 8 was as fast as 16 or faster, 32 slower (2-core CPU, ResNet50 and Lite0).
BATCH_SIZE = 8
#: Batch size on a GPU: large enough to keep it busy, small enough that the workers' first
#: batches arrive soon (each worker decodes whole batches).
GPU_BATCH_SIZE = 64
#: Decode JPEGs at reduced scale when the backbone's resize shrinks them anyway (opt-in, see above).
JPEG_DRAFT = False
#: Ways to decode (see the module docstring); the CPU always uses "pil" unless told otherwise.
DECODERS = ("pil", "tensor", "nvjpeg")
GPU_DECODER = "tensor"
#: torch threads in each DataLoader worker (0: torch's default, one per core in every worker).
WORKER_THREADS = 1
DRAFT_GAP = 2
CACHE_NAME = "features.npy"
#: Settings that must match for a cache to be reused, with the word the status uses.
CACHE_KEYS = (("manifest_hash", "images changed"), ("backbone", "backbone changed"),
              ("weights_id", "weights changed"), ("preprocessing", "preprocessing changed"),
              ("normalize", "normalisation changed"), ("precision", "precision changed"),
              ("decode", "decoding changed"), ("device", "device changed"))


class FeatureError(RuntimeError):
    """A feature file or cache that is missing, malformed or inconsistent."""


@dataclass
class FeatureSet:
    """Feature vectors, row i belonging to manifest id `ids[i]`."""

    vectors: np.ndarray                     # (N, d) float32, C-contiguous
    ids: np.ndarray                         # (N,) int64
    failures: list[tuple[int, str, str]] = field(default_factory=list)  # (id, path, reason)
    meta: dict = field(default_factory=dict)
    images_per_second: float = float("nan")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def summary(self) -> str:
        """What the vectors are, with the speed of the extraction that made them and when (a cached
        set reports its own extraction, not this run's)."""
        return (f"{len(self)} vectors of dimension {self.dim} ({self.meta.get('backbone')}, "
                f"{self.meta.get('precision')}), {len(self.failures)} images failed; extracted "
                f"{self.meta.get('created', '')} at {self.images_per_second:.1f} images/s")


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
        return f"{type(err).__name__}: {first_line(err)}"
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


def _collate(items):
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


def _decode_on_device(batch: EncodedBatch, ids: list[int], pre: TensorPreprocessing, device: str,
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


def _workers_that_fit(workers: int, batch_size: int, backbone: Backbone, value_bytes: int = 4) -> int:
    """At most `workers`, fewer when their batches in flight (2 each) would fill more than half of
    the shared memory they are passed through (/dev/shm, often 64 MB in containers). value_bytes:
    4 for float crops ("pil"), 1 for uint8 crops."""
    batch_bytes = batch_size * 3 * max(backbone.preprocessing["crop"]) ** 2 * value_bytes
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        return workers   # not Linux: workers share memory another way
    return max(0, min(workers, int(free // 2 // (2 * batch_bytes))))


def _one_thread_per_worker(threads: int, worker_id: int) -> None:
    if threads:
        torch.set_num_threads(threads)


def extract(manifest: Manifest, backbone: Backbone, *, batch_size: int | None = None,
            normalize: bool = False, progress: bool = True, num_workers: int | None = None,
            precision: str = "fp32", jpeg_draft: bool = JPEG_DRAFT, device: str = "auto",
            decoder: str | None = None) -> FeatureSet:
    """Features of every image in `manifest`, in manifest order, failures left out and recorded.

    device: 'auto' (devices.pick_device: a CUDA GPU, else Apple's mps, else the CPU), 'cpu', 'cuda' or 'mps'.
    batch_size, num_workers: None picks the device's default: on the CPU batches of 8 decoded
    in the main process; on a GPU batches of 64 decoded by one DataLoader worker per CPU core.
    precision: 'fp32'; 'bf16' (autocast: faster on CPUs with native bfloat16, slower on
    others; the features move slightly, see the module docstring); 'fp16' (GPU only).
    jpeg_draft: decode JPEGs at reduced scale when the backbone's resize would shrink them
    anyway (see the module docstring); False decodes every image at full size.
    decoder: 'pil', 'tensor' or 'nvjpeg' (see the module docstring); None picks the device's
    default; one that cannot run here falls back, with a warning saying why.
    """

    device = pick_device(device)
    on_gpu = device.startswith("cuda")
    check_precision(precision, device)
    decoder, why = pick_decoder(decoder, device, jpeg_draft)
    if why:
        warnings.warn(why, RuntimeWarning, stacklevel=2)
    batch_size = batch_size or (GPU_BATCH_SIZE if on_gpu else BATCH_SIZE)
    if num_workers is None:
        value_bytes = 4 if decoder == "pil" else 1
        num_workers = _workers_that_fit(cpu_cores(), batch_size, backbone, value_bytes) if on_gpu else 0
    start = time.perf_counter()
    model = backbone.model.eval()
    home = next(model.parameters(), torch.empty(0)).device   # a model without weights lives on the CPU
    model.to(device, memory_format=torch.channels_last)
    pre = TensorPreprocessing(backbone.preprocessing) if decoder != "pil" else None   # pil: backbone.transform
    stats = pre.stats(device) if pre else None
    dataset = ImageDataset(manifest, backbone.transform, min_side(backbone) if jpeg_draft else None,
                           decoder, pre)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate,
                        pin_memory=on_gpu and decoder != "nvjpeg",
                        worker_init_fn=functools.partial(_one_thread_per_worker, WORKER_THREADS))
    chunks, ids, failures = [], [], []
    paths = {e.id: e.path for e in manifest}
    files = {e.id: str(manifest.abspath(e)) for e in manifest} if decoder == "nvjpeg" else {}
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast(torch.device(device).type, dtype=half, enabled=half is not None)
    bar = tqdm(total=len(manifest), unit="img", desc=f"features ({backbone.name}, {device})",
               disable=not progress)
    try:
        with torch.inference_mode(), autocast, bar:
            for batch_ids, batch, failed in loader:
                bar.update(len(batch_ids) + len(failed))
                failures.extend((i, paths[i], reason) for i, reason in failed)
                if isinstance(batch, EncodedBatch):
                    batch, batch_ids, failed = _decode_on_device(batch, batch_ids, pre, device, files)
                    failures.extend((i, paths[i], reason) for i, reason in failed)
                if batch is None:
                    continue
                batch = batch.to(device, non_blocking=True, memory_format=torch.channels_last)
                if decoder != "pil":
                    batch = pre.normalise(batch, stats)
                chunks.append(model(batch).float())   # stays on the device: no wait per batch
                ids.extend(batch_ids)
            vectors = (torch.cat(chunks).cpu().numpy() if chunks
                       else np.zeros((0, backbone.dim), np.float32))
    finally:
        model.to(home)   # the backbone stays where the caller had it
    vectors = normalize_rows(vectors) if normalize else np.ascontiguousarray(vectors, dtype=np.float32)
    rate = len(manifest) / (time.perf_counter() - start)
    meta = metadata(backbone, manifest, normalize=normalize, precision=precision,
                    decode=decode_mode(backbone, jpeg_draft, decoder), rate=rate, decoder=decoder,
                    device=torch.device(device).type, device_name=device_name(device), batch_size=batch_size,
                    num_workers=num_workers, count=len(ids), torch=torch.__version__)
    return FeatureSet(vectors, np.asarray(ids, dtype=np.int64), failures, meta, rate)


def metadata(backbone: Backbone, manifest: Manifest, *, normalize: bool, precision: str, decode: str,
             rate: float, **run) -> dict:
    """What features.json records of a FeatureSet: the backbone's identity, the manifest's hash, how
    the vectors were made (`run`: device, batch size, engine, ...), how fast, and when."""
    return {**backbone.identity(), "manifest_hash": manifest.content_hash(), "normalize": normalize,
            "precision": precision, "decode": decode, **run, "images_per_second": round(rate, 2),
            "created": timestamp()}


def companion_paths(out_npy: str | Path) -> tuple[Path, Path, Path]:
    """features.npy -> (features.npy, features.ids.npy, features.json)."""
    out = Path(out_npy)
    if out.suffix != ".npy":
        raise FeatureError(f"{out}: a features file must end in .npy")
    return out, out.with_suffix(".ids.npy"), out.with_suffix(".json")


def save_features(fs: FeatureSet, out_npy: str | Path) -> Path:
    """Write vectors, ids and metadata (with failures) atomically; the json is written last."""
    vec_path, ids_path, meta_path = companion_paths(out_npy)
    meta = {**fs.meta, "failures": [list(f) for f in fs.failures]}
    atomic_write(vec_path, lambda f: np.save(f, fs.vectors))
    atomic_write(ids_path, lambda f: np.save(f, fs.ids))
    atomic_write(meta_path, json.dumps(meta, indent=1))
    return vec_path


def load_features(path: str | Path) -> FeatureSet:
    """Read what `save_features` wrote, checking the three files agree."""
    vec_path, ids_path, meta_path = companion_paths(path)
    missing = [p.name for p in (vec_path, ids_path, meta_path) if not p.is_file()]
    if missing:
        raise FeatureError(f"{vec_path}: missing {', '.join(missing)}; extract the features again")
    try:
        vectors = np.load(vec_path, allow_pickle=False)
        ids = np.load(ids_path, allow_pickle=False)
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, OSError, json.JSONDecodeError) as err:
        raise FeatureError(f"{vec_path}: unreadable ({err}); extract the features again") from None
    if (vectors.dtype != np.float32 or vectors.ndim != 2 or ids.dtype != np.int64
            or len(ids) != len(vectors) or vectors.shape[1] != meta.get("dim")):
        raise FeatureError(f"{vec_path}: vectors {vectors.shape} {vectors.dtype}, ids {ids.shape} "
                           f"{ids.dtype} and dim {meta.get('dim')} do not agree; extract again")
    failures = [tuple(f) for f in meta.pop("failures", [])]
    return FeatureSet(np.ascontiguousarray(vectors), ids, failures, meta,
                      float(meta.get("images_per_second", "nan")))


def load_or_extract(manifest: Manifest, backbone: Backbone, cache_dir: str | Path,
                    **kw) -> tuple[FeatureSet, str]:
    """Cached features when they match exactly, else a fresh extraction (saved to the cache).

    Returns the features and a status: "cache hit", or "cache miss: <why>". `kw` goes to
    `extract`; a cache must match its normalize, precision and device type (cpu or cuda) as well
    as the manifest content, backbone, weights and preprocessing.
    """

    path = Path(cache_dir) / CACHE_NAME
    device = pick_device(kw.get("device", "auto"))
    want = {**backbone.identity(), "manifest_hash": manifest.content_hash(),
            "normalize": kw.get("normalize", False),
            "precision": check_precision(kw.get("precision", "fp32"), device),
            "decode": decode_mode(backbone, kw.get("jpeg_draft", JPEG_DRAFT),
                                  pick_decoder(kw.get("decoder"), device, kw.get("jpeg_draft", JPEG_DRAFT))[0]),
            "device": torch.device(device).type}
    if not path.is_file():
        status = "cache miss: no cache"
    else:
        try:
            cached = load_features(path)
            changed = [word for key, word in CACHE_KEYS if cached.meta.get(key) != want[key]]
            status = "cache miss: " + ", ".join(changed) if changed else "cache hit"
        except FeatureError as err:
            status = f"cache miss: unreadable cache ({err})"
        if status == "cache hit":
            return cached, status
    fs = extract(manifest, backbone, **kw)
    save_features(fs, path)
    return fs, status
