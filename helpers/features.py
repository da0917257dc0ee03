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
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .backbones import Backbone
from .fileio import atomic_write
from .images import ImageLoadError, open_rgb
from .indexes import normalize as normalize_rows
from .manifest import Manifest

PRECISIONS = ("fp32", "bf16")
#: Batch size: 8 was as fast as 16 or faster, 32 slower (2-core CPU, ResNet50 and Lite0).
BATCH_SIZE = 8
#: Decode JPEGs at reduced scale when the backbone's resize shrinks them anyway (opt-in, see above).
JPEG_DRAFT = False
DRAFT_GAP = 2
CACHE_NAME = "features.npy"
#: Settings that must match for a cache to be reused, with the word the status uses.
CACHE_KEYS = (("manifest_hash", "images changed"), ("backbone", "backbone changed"),
              ("weights_id", "weights changed"), ("preprocessing", "preprocessing changed"),
              ("normalize", "normalisation changed"), ("precision", "precision changed"),
              ("decode", "decoding changed"))


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


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    return precision


def decode_mode(backbone: Backbone, jpeg_draft: bool) -> str:
    """How images are decoded, as features' metadata records it."""
    return f"jpeg draft, short side >= {min_side(backbone)}" if jpeg_draft else "full"


def min_side(backbone: Backbone) -> int:
    """The short side a JPEG keeps when decoded at reduced scale: twice the backbone's resize (as
    PIL's `thumbnail` does), so that the resize still filters what the decoder's scaling leaves."""
    return DRAFT_GAP * max(backbone.preprocessing["resize"])


class ImageDataset(Dataset):
    """Manifest entries as (id, tensor, None), or (id, None, reason) when the image fails.

    min_side: passed to `open_rgb` (JPEGs decoded at reduced scale), or None for full decoding.
    """

    def __init__(self, manifest: Manifest, transform, min_side: int | None = None):
        self.items = [(e.id, str(manifest.abspath(e)), e.sha256) for e in manifest]
        self.transform = transform
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        id_, path, sha = self.items[i]
        try:
            data = Path(path).read_bytes()   # read once: hashed, then decoded from memory
            if hashlib.sha256(data).hexdigest() != sha:
                return id_, None, "file changed since the manifest was made; rescan the folder"
            return id_, self.transform(open_rgb(path, min_side=self.min_side, data=data)), None
        except OSError as err:
            return id_, None, f"cannot read file ({err.strerror or err})"
        except ImageLoadError as err:
            return id_, None, err.reason
        except Exception as err:  # one bad file must not stop the run: record it, whatever it was
            return id_, None, f"{type(err).__name__}: {err}"


def _collate(items):
    """Stack the images that loaded; pass the failures through."""
    ok = [(i, x) for i, x, _ in items if x is not None]
    failed = [(i, reason) for i, x, reason in items if x is None]
    batch = torch.stack([x for _, x in ok]) if ok else None
    return [i for i, _ in ok], batch, failed


def extract(manifest: Manifest, backbone: Backbone, *, batch_size: int = BATCH_SIZE,
            normalize: bool = False, progress: bool = True, num_workers: int = 0,
            precision: str = "fp32", jpeg_draft: bool = JPEG_DRAFT) -> FeatureSet:
    """Features of every image in `manifest`, in manifest order, failures left out and recorded.

    precision: 'fp32', or 'bf16' (autocast: faster on CPUs with native bfloat16, slower on
    others; the features move slightly, see the module docstring).
    jpeg_draft: decode JPEGs at reduced scale when the backbone's resize would shrink them
    anyway (see the module docstring); False decodes every image at full size.
    """
    _check_precision(precision)
    start = time.perf_counter()
    model = backbone.model.eval().to(memory_format=torch.channels_last)
    dataset = ImageDataset(manifest, backbone.transform, min_side(backbone) if jpeg_draft else None)
    loader = DataLoader(dataset, batch_size=batch_size,
                        num_workers=num_workers, collate_fn=_collate)
    chunks, ids, failures = [], [], []
    paths = {e.id: e.path for e in manifest}
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    bar = tqdm(total=len(manifest), unit="img", desc=f"features ({backbone.name})", disable=not progress)
    with torch.inference_mode(), bf16, bar:
        for batch_ids, batch, failed in loader:
            if batch is not None:
                out = model(batch.contiguous(memory_format=torch.channels_last))
                chunks.append(out.float().numpy())
                ids.extend(batch_ids)
            failures.extend((i, paths[i], reason) for i, reason in failed)
            bar.update(len(batch_ids) + len(failed))
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, backbone.dim), np.float32)
    vectors = normalize_rows(vectors) if normalize else np.ascontiguousarray(vectors, dtype=np.float32)
    rate = len(manifest) / (time.perf_counter() - start)
    meta = {**backbone.identity(), "manifest_hash": manifest.content_hash(), "normalize": normalize,
            "precision": precision, "decode": decode_mode(backbone, jpeg_draft),
            "batch_size": batch_size, "count": len(ids),
            "images_per_second": round(rate, 2), "torch": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return FeatureSet(vectors, np.asarray(ids, dtype=np.int64), failures, meta, rate)


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
    `extract`; a cache must match its normalize and precision as well as the manifest content,
    backbone, weights and preprocessing.
    """
    path = Path(cache_dir) / CACHE_NAME
    want = {**backbone.identity(), "manifest_hash": manifest.content_hash(),
            "normalize": kw.get("normalize", False),
            "precision": _check_precision(kw.get("precision", "fp32")),
            "decode": decode_mode(backbone, kw.get("jpeg_draft", JPEG_DRAFT))}
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
