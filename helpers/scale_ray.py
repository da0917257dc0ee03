"""Feature extraction on Ray Data, and the Parquet shards it writes (notebook 11_scaling_out).

The pipeline is `helpers.features.extract` run inside a Ray Data actor pool: the manifest becomes
a dataset of rows (row, id, path, sha256); `map_batches` hands each batch to an actor that holds
one copy of the backbone and calls `extract` on that batch's sub-manifest, so decoding,
preprocessing, batching, precision and failure recording are `extract`'s own, not a second copy.
Each actor returns (row, id, path, vector, error) rows; Ray writes them as Parquet shards.
A failed image is a row with a null vector and its reason in `error`, as `extract` records it.

`ray.init()` starts a local instance (num_cpus=the machine's cores); `address=` (or the
RAY_ADDRESS environment variable, which Ray reads itself) joins a cluster instead, and then the
`helpers` package travels to the workers with the job. On a cluster the images and the output
folder must be on a file system every node reads and writes (the same path on each).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .backbones import Backbone
from .decoding import decode_mode
from .features import BATCH_SIZE, FeatureError, FeatureSet, extract, metadata
from .fileio import atomic_write, first_line
from .manifest import Entry, Manifest

META_NAME = "features.json"
#: Images an actor receives at a time (it runs `extract` over them in batches of BATCH_SIZE).
RAY_BATCH = 64


class RayStartError(RuntimeError):
    """Ray did not start (or could not be joined); the message says what was tried."""


def start_ray(address: str | None = None, num_cpus: int | None = None, attempts: int = 2):
    """Start (or join) Ray once per process: local by default, a cluster with `address` or
    RAY_ADDRESS. Returns Ray's context.

    A local start is tried `attempts` times: Ray 2.60's raylet gives its agent process 15 s to
    report its ports and aborts when the agent starts slower than that, which happens on an
    overloaded machine (it did on the course's shared 2-core build machine); RayStartError then.
    """
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context()
    if address or os.environ.get("RAY_ADDRESS"):
        import helpers  # the course package goes to the cluster's workers with the job

        kw = {"address": address, "runtime_env": {"py_modules": [str(Path(helpers.__file__).parent)]}}
    else:
        kw = {"num_cpus": num_cpus or os.cpu_count(), "include_dashboard": False}
    for attempt in range(1, attempts + 1):
        before = _children()
        try:
            return ray.init(log_to_driver=False, **kw)
        except Exception as err:  # Ray raises plain Exception for a node that did not start
            ray.shutdown()
            _end(_children() - before)   # what the failed start left running (GCS, monitors, agents)
            if attempt == attempts:
                raise RayStartError(f"Ray did not start after {attempts} tries: {first_line(err)}") from None


def _children() -> set:
    import psutil

    return set(psutil.Process().children(recursive=True))


def _end(processes: set) -> None:
    import psutil

    for p in processes:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(processes), timeout=10)


class Embedder:
    """A Ray Data actor: one backbone per actor; each call runs `extract` on a batch of rows."""

    def __init__(self, root: str, backbone: Backbone, threads: int, extract_kw: dict):
        import torch

        torch.set_num_threads(threads)  # Ray sets OMP_NUM_THREADS=1 in its workers
        self.root, self.backbone, self.extract_kw = root, backbone, extract_kw

    def __call__(self, batch: dict) -> pa.Table:
        rows = {int(i): int(r) for i, r in zip(batch["id"], batch["row"])}
        entries = [Entry(int(i), str(p), str(s), 0, 0, 0, "", "")
                   for i, p, s in zip(batch["id"], batch["path"], batch["sha256"])]
        fs = extract(Manifest(self.root, entries), self.backbone, progress=False, **self.extract_kw)
        paths = {e.id: e.path for e in entries}
        failed = [(i, reason) for i, _, reason in fs.failures]
        ids = [int(i) for i in fs.ids] + [i for i, _ in failed]
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(fs.vectors.ravel(), pa.float32()), fs.dim)
        vectors = pa.concat_arrays([vectors, pa.nulls(len(failed), vectors.type)])
        return pa.table({"row": pa.array([rows[i] for i in ids], pa.int64()), "id": pa.array(ids, pa.int64()),
                         "path": [paths[i] for i in ids], "vector": vectors,
                         "error": [None] * len(fs.ids) + [reason for _, reason in failed]})


def extract_ray(manifest: Manifest, backbone: Backbone, out_dir: str | Path, *, concurrency: int = 1,
                threads: int | None = None, ray_batch: int = RAY_BATCH, batch_size: int = BATCH_SIZE,
                normalize: bool = False, precision: str = "fp32", jpeg_draft: bool = False,
                address: str | None = None) -> Path:
    """Extract features for `manifest` with Ray Data into Parquet shards under `out_dir`.

    concurrency: actors, each with its own copy of `backbone`; threads: torch threads per actor
    (default: this machine's cores / concurrency). ray_batch: images per actor call;
    batch_size, normalize, precision, jpeg_draft: as in `helpers.features.extract`.
    The shards are written to a temporary folder beside `out_dir` and renamed into place with
    features.json (what they were made from), so a killed run leaves the previous output intact.
    Returns `out_dir`; `load_shards(out_dir)` reads it back.
    """
    import ray

    start_ray(address)
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.perf_counter()
    items = [{"row": r, "id": e.id, "path": e.path, "sha256": e.sha256} for r, e in enumerate(manifest)]
    kw = {"batch_size": batch_size, "normalize": normalize, "precision": precision, "jpeg_draft": jpeg_draft}
    threads = threads or max(1, (os.cpu_count() or 1) // concurrency)
    ds = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // ray_batch)))
    # num_cpus is what Ray reserves when scheduling; the actor's torch threads are set apart, so
    # one actor can use every core while Ray's Parquet-writing tasks still find a free CPU
    ds = ds.map_batches(Embedder, batch_size=ray_batch, compute=ray.data.ActorPoolStrategy(size=concurrency),
                        num_cpus=1, batch_format="numpy",
                        fn_constructor_kwargs={"root": str(manifest.root), "backbone": backbone,
                                               "threads": threads, "extract_kw": kw})
    try:
        ds.write_parquet(str(tmp))
        rate = len(manifest) / (time.perf_counter() - start)
        meta = metadata(backbone, manifest, normalize=normalize, precision=precision,
                        decode=decode_mode(backbone, jpeg_draft), rate=rate, batch_size=batch_size,
                        engine=f"ray data {ray.__version__}", concurrency=concurrency, threads=threads)
        atomic_write(tmp / META_NAME, json.dumps(meta, indent=1))
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def shard_files(folder: str | Path) -> list[Path]:
    """The Parquet shards in `folder`, in name order; FeatureError when there are none."""
    files = sorted(Path(folder).glob("*.parquet"))
    if not files:
        raise FeatureError(f"{folder}: no Parquet shards; run the extraction (or write_shards) first")
    return files


def _matrix(column) -> np.ndarray:
    """A fixed-size-list column of float32 as an (n, d) float32 C-contiguous array."""
    column = column.combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(-1, column.type.list_size), dtype=np.float32)


def read_shard(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64, vectors float32 C-contiguous) of one shard's successful rows."""
    table = pq.read_table(path, columns=["id", "vector"])
    table = table.filter(pc.is_valid(table.column("vector")))
    return table.column("id").to_numpy().astype(np.int64), _matrix(table.column("vector"))


def load_shards(folder: str | Path) -> FeatureSet:
    """Every shard of `folder` as one FeatureSet, rows in manifest order (a `row` column when
    present), failures as (id, path, reason), metadata from features.json when present."""
    files = shard_files(folder)
    table = pa.concat_tables([pq.read_table(f) for f in files])
    if "row" in table.column_names:
        table = table.sort_by("row")
    ok = table.filter(pc.is_valid(table.column("vector")))
    bad = table.filter(pc.is_null(table.column("vector")))
    failures = ([(int(i), str(p), str(e)) for i, p, e in zip(*(bad.column(c).to_pylist() for c in ("id", "path", "error")))]
                if "error" in table.column_names else [])
    meta_path = Path(folder) / META_NAME
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    return FeatureSet(_matrix(ok.column("vector")), ok.column("id").to_numpy().astype(np.int64),
                      failures, meta, float(meta.get("images_per_second", "nan")))


def write_shards(ids, vectors, folder: str | Path, rows_per_shard: int) -> list[Path]:
    """Write (id, vector) as Parquet shards of `rows_per_shard` rows in the layout `extract_ray`
    writes, each through `atomic_write`, replacing the folder's old shards: how a collection that
    is already vectors is split."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    for old in Path(folder).glob("shard_*.parquet"):
        old.unlink()
    paths = []
    for n, s in enumerate(range(0, len(vectors), rows_per_shard)):
        part = vectors[s:s + rows_per_shard]
        table = pa.table({"id": pa.array(np.asarray(ids[s:s + rows_per_shard], np.int64)),
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(part.ravel()), part.shape[1])})
        paths.append(atomic_write(Path(folder) / f"shard_{n:05d}.parquet", lambda f, t=table: pq.write_table(t, f)))
    return paths
