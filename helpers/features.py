"""Feature extraction: every image of a manifest through a backbone, in batches, into an
(N, d) float32 array aligned with the manifest ids; and a cache that is reused only when it
was made from the same images, backbone, weights, preprocessing and settings.

Images that fail to load are recorded (id, path, reason) and left out; they never stop a run.
The defaults were chosen by measurement (benchmarks/bench_features.py, bench_jpeg_draft.py,
bench_gpu.py; the README gives the figures): on a CPU, batches of BATCH_SIZE in channels_last
memory layout (BatchNorms folded by `backbones`), decoded in the main process, fp32. bfloat16
autocast (`precision="bf16"`) and reduced-scale JPEG decoding (`jpeg_draft=True`) are opt-ins:
faster, but they move the features and change some nearest neighbours. On a GPU (`device="auto"`
picks it, `devices.pick_device`; notebook 07_gpu): model and batches on the device, batches of
GPU_BATCH_SIZE decoded by DataLoader workers on every CPU core into pinned memory (how they decode:
`decoding`), `fp16` an opt-in. Device, precision and decoding are part of the cache key.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .backbones import Backbone
from .decoding import (EncodedBatch, ImageDataset, TensorPreprocessing, collate, decode_mode, decode_on_device,
                       min_side, pick_decoder)
from .devices import check_precision, cpu_cores, device_name, pick_device
from .fileio import atomic_write, timestamp
from .indexes import normalize as normalize_rows
from .manifest import Manifest

#: Batch size: 8 was as fast as 16 or faster, 32 slower (2-core CPU, ResNet50 and Lite0).
BATCH_SIZE = 8
#: Batch size on a GPU: large enough to keep it busy, small enough that the workers' first
#: batches arrive soon (each worker decodes whole batches).
GPU_BATCH_SIZE = 64
#: Decode JPEGs at reduced scale when the backbone's resize shrinks them anyway (opt-in, see above).
JPEG_DRAFT = False
#: torch threads in each DataLoader worker (0: torch's default, one per core in every worker).
WORKER_THREADS = 1
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


def _run(model, loader: DataLoader, manifest: Manifest, backbone: Backbone, device: str,
         pre: TensorPreprocessing | None, precision: str, progress: bool):
    """Every batch of `loader` through `model` on `device`: (vectors (N, d), ids, failures)."""
    chunks, ids, failures = [], [], []
    paths = {e.id: e.path for e in manifest}
    files = {e.id: str(manifest.abspath(e)) for e in manifest} if loader.dataset.decoder == "nvjpeg" else {}
    stats = pre.stats(device) if pre else None
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast(torch.device(device).type, dtype=half, enabled=half is not None)
    bar = tqdm(total=len(manifest), unit="img", desc=f"features ({backbone.name}, {device})",
               disable=not progress)
    with torch.inference_mode(), autocast, bar:
        for batch_ids, batch, failed in loader:
            bar.update(len(batch_ids) + len(failed))
            failures.extend((i, paths[i], reason) for i, reason in failed)
            if isinstance(batch, EncodedBatch):
                batch, batch_ids, failed = decode_on_device(batch, batch_ids, pre, device, files)
                failures.extend((i, paths[i], reason) for i, reason in failed)
            if batch is None:
                continue
            batch = batch.to(device, non_blocking=True, memory_format=torch.channels_last)
            if pre is not None:
                batch = pre.normalise(batch, stats)
            chunks.append(model(batch).float())   # stays on the device: no wait per batch
            ids.extend(batch_ids)
        vectors = torch.cat(chunks).cpu().numpy() if chunks else np.zeros((0, backbone.dim), np.float32)
    return vectors, ids, failures


def extract(manifest: Manifest, backbone: Backbone, *, batch_size: int | None = None,
            normalize: bool = False, progress: bool = True, num_workers: int | None = None,
            precision: str = "fp32", jpeg_draft: bool = JPEG_DRAFT, device: str = "auto",
            decoder: str | None = None) -> FeatureSet:
    """Features of every image in `manifest`, in manifest order, failures left out and recorded.

    device: 'auto' (devices.pick_device: a CUDA GPU, else Apple's mps, else the CPU), 'cpu', 'cuda' or 'mps'.
    batch_size, num_workers: None picks the device's default: on the CPU batches of 8 decoded
    in the main process (Apple's mps too); on a CUDA GPU batches of 64 decoded by one DataLoader worker per CPU core.
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
    dataset = ImageDataset(manifest, backbone.transform, min_side(backbone) if jpeg_draft else None,
                           decoder, pre)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate,
                        pin_memory=on_gpu and decoder != "nvjpeg",
                        worker_init_fn=functools.partial(_one_thread_per_worker, WORKER_THREADS))
    try:
        vectors, ids, failures = _run(model, loader, manifest, backbone, device, pre, precision, progress)
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
    `extract`; a cache must match its normalize, precision and device type (cpu, cuda or mps) as well
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
