"""Index bundles: a Faiss index saved with the manifest its ids come from and what made it.
Notebook 09_serialization teaches them; `python -m helpers index | search | update` uses them.

A bundle is a folder of three files:
- `index.faiss`: what `faiss.write_index` wrote (a GPU index is copied to the CPU first);
- `manifest.csv`: the manifest of exactly the images the index holds; the index's ids are its ids;
- `bundle.json`: factory string, metric, dimension, search parameters, backbone and weights,
  feature settings, Faiss version, manifest content hash, SHA-256 of the index and manifest
  files, vector count, creation time.

`save` writes the folder atomically (`fileio.atomic_write_dir`): a write killed part-way leaves the
previous bundle as it was. `load` checks before it trusts: Faiss reads index files as trusted
input (a damaged or crafted file can crash the process, or load silently wrong), so `read_index`
only ever sees a file whose SHA-256 is the one recorded when we wrote it; then the vector count
against the manifest, and dimension, metric and backbone against what is in use. Each refusal is
a `BundleError`: one sentence saying what differs and what to do. `update` keeps a bundle current
as its folder changes; ids never change. `tune` sets the search parameters for a recall target.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import faiss
import numpy as np

from . import indexes
from .backbones import Backbone
from .features import FeatureSet, extract
from .fileio import atomic_write, atomic_write_dir, first_line, sha256_file, timestamp
from .images import ImageLoadError, probe
from .indexes import INDEX_METRICS, innermost, metric_of, prepare, suggest_nlist
from .manifest import Entry, Manifest, ManifestError
from .tuning import TuneResult, tune_on_own_vectors

INDEX_FILE, MANIFEST_FILE, META_FILE = "index.faiss", "manifest.csv", "bundle.json"
FORMAT = 1
#: Below this many vectors the default index is exact search (Flat): fast enough, nothing to train.
FLAT_LIMIT = 20_000
#: What a bundle records of the backbone (`Backbone.identity()`), checked on load.
BACKBONE_KEYS = ("backbone", "weights_id", "dim", "preprocessing")
#: The feature settings a query must be extracted with to match the indexed vectors.
FEATURE_KEYS = ("normalize", "precision", "decode", "batch_size")
REBUILD = "rebuild the bundle with `python -m helpers index`"


class BundleError(RuntimeError):
    """A bundle that is missing, damaged or does not match what is in use; the message says what to do."""


class QueryError(ValueError):
    """A query image that cannot be read."""


@dataclass
class Bundle:
    """An index with its manifest and metadata; `read_only` when loaded memory-mapped."""

    path: Path | None
    index: faiss.Index
    manifest: Manifest
    meta: dict
    read_only: bool = False

    def search(self, queries: np.ndarray, k: int = 5, params: str = "") -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the k nearest images for each query vector, best first; cosine queries
        are L2-normalised. `params` (e.g. "nprobe=16") is set on the index first, as
        `faiss.ParameterSpace` reads it, and stays set."""
        if queries.ndim != 2 or queries.shape[1] != self.index.d:
            raise BundleError(f"the queries have shape {queries.shape} but the index holds {self.index.d}-d "
                              f"vectors: extract them with {self.meta['backbone']['backbone']}, as the bundle was")
        if params:
            set_search_parameters(self.index, params)
        return self.index.search(prepare(queries, self.meta["metric"]), k)


def set_search_parameters(index: faiss.Index, params: str) -> None:
    """`faiss.ParameterSpace().set_index_parameters(index, params)`, a bad name as a BundleError."""
    try:
        faiss.ParameterSpace().set_index_parameters(index, params)
    except RuntimeError as err:
        raise BundleError(f"search parameters {params!r} do not fit this index ({_faiss_reason(err)}): "
                          "IVF takes nprobe, HNSW efSearch, a refine stage k_factor_rf") from None


def default_factory(n: int) -> tuple[str, str]:
    """The index (factory string, search parameters) built for `n` vectors when none is named:
    exact search below FLAT_LIMIT vectors, else IVF with `suggest_nlist(n)` lists (the course's one
    nlist rule) visiting 32 of them; tune nprobe for
    your recall target as notebook 08_tuning does. The one place this choice is made."""
    if n < FLAT_LIMIT:
        return "IDMap,Flat", ""
    nlist = suggest_nlist(n)
    return f"IVF{nlist},Flat", f"nprobe={min(32, nlist)}"


def build(manifest: Manifest, features: FeatureSet, factory: str | None = None, metric: str = "cosine",
          params: str | None = None, *, n_train: int | None = None, progress: bool = True,
          chunk: int = 10_000) -> Bundle:
    """A bundle (not yet saved) of `features` under their manifest ids, for `python -m helpers index`:
    `faiss.index_factory(d, factory, metric)`, trained on all vectors (or a random `n_train` of them),
    added in chunks with a progress bar. factory None: `default_factory`, whose search parameters
    apply unless `params` is given."""
    if metric not in INDEX_METRICS:
        raise BundleError(f"metric {metric!r}: use one of {', '.join(INDEX_METRICS)}")
    if features.meta.get("manifest_hash") != manifest.content_hash():
        raise BundleError("the features were extracted from a different manifest than the one given: "
                          "extract them again with `python -m helpers features MANIFEST`")
    if len(features) == 0:
        raise BundleError("the features hold no vectors: nothing to index")
    if factory is None:
        factory, default_params = default_factory(len(features))
        params = default_params if params is None else params
    try:
        index = indexes.build(factory, features.vectors, features.ids, metric, n_train=n_train, chunk=chunk,
                              progress=progress)
    except RuntimeError as err:
        raise BundleError(f"Faiss cannot build {factory!r} on {len(features)} vectors of dimension {features.dim} "
                          f"({_faiss_reason(err)}): check the factory string and the training set size") from None
    if params:
        set_search_parameters(index, params)
    indexed = set(features.ids.tolist())
    kept = Manifest(manifest.root, [e for e in manifest if e.id in indexed])
    return Bundle(None, index, kept, metadata(index, kept, features.meta, factory, params or ""))


def tune(bundle: Bundle, features: FeatureSet, recall_target: float, *, param: str | None = None,
         values=None, fixed: str = "") -> TuneResult:
    """Tune the bundle's search parameter for `recall_target` (recall@10) on a sample of its own
    vectors (`tuning.tune_on_own_vectors`), and record the setting found as its search parameters."""
    x = prepare(features.vectors, bundle.meta["metric"])
    result = tune_on_own_vectors(bundle.index, x, features.ids, recall_target, bundle.meta["metric"],
                                 param=param, values=values, fixed=fixed)
    bundle.meta["search_parameters"] = result.setting or ""
    return result


def metadata(index: faiss.Index, manifest: Manifest, features_meta: dict, factory: str, params: str = "") -> dict:
    """The metadata `save` records for `index` built from features with `features_meta`
    (FeatureSet.meta, which carries Backbone.identity()) over the images of `manifest`."""
    return {"format": FORMAT, "factory": factory, "metric": metric_of(index), "dim": index.d,
            "search_parameters": params, "count": int(index.ntotal),
            "backbone": {k: features_meta.get(k) for k in BACKBONE_KEYS},
            "features": {k: features_meta.get(k) for k in FEATURE_KEYS},
            "faiss": faiss.__version__, "manifest_hash": manifest.content_hash(),
            "created": timestamp()}


def save(bundle: Bundle, path: str | Path) -> Path:
    """Write `bundle` to the folder `path` atomically; a GPU index is copied to the CPU first.

    The index count must equal the manifest's length (one vector per image, under its id)."""
    path = Path(path)
    if bundle.index.ntotal != len(bundle.manifest):
        raise BundleError(f"the index holds {bundle.index.ntotal} vectors but the manifest lists "
                          f"{len(bundle.manifest)} images: give the manifest of exactly the images indexed")
    index = _to_cpu(bundle.index)
    meta = {**bundle.meta, "count": int(index.ntotal), "manifest_hash": bundle.manifest.content_hash(),
            "faiss": faiss.__version__, "folder": str(path.resolve()), "image_root": str(bundle.manifest.root)}

    def fill(tmp: Path) -> None:
        atomic_write(tmp / INDEX_FILE, lambda f: faiss.write_index(index, faiss.PyCallbackIOWriter(f.write)))
        bundle.manifest.save(tmp / MANIFEST_FILE)
        meta["index_sha256"], meta["index_bytes"] = sha256_file(tmp / INDEX_FILE)
        meta["manifest_sha256"] = sha256_file(tmp / MANIFEST_FILE)[0]
        atomic_write(tmp / META_FILE, json.dumps(meta, indent=1))

    atomic_write_dir(path, fill)
    bundle.path, bundle.meta = path, meta
    return path


def read_meta(path: str | Path) -> dict:
    """A bundle's bundle.json, after checking the folder holds the three files."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle folder; build one with `python -m helpers index`")
    missing = [name for name in (INDEX_FILE, MANIFEST_FILE, META_FILE) if not (path / name).is_file()]
    if missing:
        raise BundleError(f"{path}: not a complete bundle (missing {', '.join(missing)}); {REBUILD}")
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{path / META_FILE}: unreadable ({err}); {REBUILD}") from None
    needed = ("format", "metric", "dim", "count", "index_sha256", "index_bytes", "manifest_sha256", "backbone",
              "features", "search_parameters")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or any(k not in meta for k in needed):
        raise BundleError(f"{path / META_FILE}: not bundle metadata of format {FORMAT}; {REBUILD}")
    return meta


def load(path: str | Path, *, backbone: Backbone | dict | None = None, metric: str | None = None,
         mmap: bool = False) -> Bundle:
    """Read a bundle, verifying it first (see the module docstring); BundleError on any mismatch.

    backbone: the backbone in use (or its `identity()`); the bundle must have been built with it.
    metric: the metric the caller expects, if any. mmap: memory-map the index's vectors and lists
    (`faiss.IO_FLAG_MMAP_IFC`): loads at once and shares pages between processes, but the index is
    read-only (Faiss aborts the process on an add to it), so `update` refuses such a bundle.
    """
    path = Path(path)
    meta = read_meta(path)
    index_path = path / INDEX_FILE
    digest, size = sha256_file(index_path)
    if size != meta["index_bytes"]:
        raise BundleError(f"{index_path}: {size:,} bytes where {meta['index_bytes']:,} were written, so it is "
                          f"truncated or was replaced; {REBUILD}")
    if digest != meta["index_sha256"]:
        raise BundleError(f"{index_path}: its SHA-256 is not the one recorded when it was written, so it is "
                          f"damaged or was replaced (never load an index file you did not make); {REBUILD}")
    if sha256_file(path / MANIFEST_FILE)[0] != meta["manifest_sha256"]:
        raise BundleError(f"{path / MANIFEST_FILE}: changed since the bundle was written, so its ids may not "
                          f"match the index; {REBUILD}")
    if backbone is not None:
        check_backbone(meta, backbone if isinstance(backbone, dict) else backbone.identity(), path)
    if metric is not None and metric != meta["metric"]:
        raise BundleError(f"{path} ranks by {meta['metric']} but {metric} was asked for: search with "
                          f"{meta['metric']}, or rebuild the bundle with --metric {metric}")
    try:
        manifest = Manifest.load(path / MANIFEST_FILE)
    except ManifestError as err:
        raise BundleError(f"{err}; {REBUILD}") from None
    manifest = _where_written(manifest, path, meta)
    if len(manifest) != meta["count"]:
        raise BundleError(f"{path}: the manifest lists {len(manifest)} images but the index was written with "
                          f"{meta['count']} vectors; {REBUILD}")
    try:
        index = faiss.read_index(str(index_path), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
    except RuntimeError as err:
        raise BundleError(f"{index_path}: Faiss cannot read it ({_faiss_reason(err)}); {REBUILD}") from None
    found = {"vector count": (index.ntotal, meta["count"]), "dimension": (index.d, meta["dim"]),
             "metric": (metric_of(index), meta["metric"])}
    for what, (got, want) in found.items():
        if got != want:
            raise BundleError(f"{index_path}: its {what} is {got} but bundle.json says {want}; {REBUILD}")
    if meta["search_parameters"]:
        set_search_parameters(index, meta["search_parameters"])
    return Bundle(path, index, manifest, meta, read_only=mmap)


def _where_written(manifest: Manifest, path: Path, meta: dict) -> Manifest:
    """manifest.csv's paths are relative to the bundle folder: for a bundle copied elsewhere whose
    images do not sit at those relative paths, the paths as seen from where it was written."""
    written, here = Path(meta.get("folder", path.resolve())), path.resolve()
    if written == here or not len(manifest) or manifest.abspath(manifest[0]).exists():
        return manifest
    root = Path(meta.get("image_root", manifest.root))
    try:
        return Manifest(root, [replace(e, path=Path(os.path.normpath(written / os.path.relpath(manifest.abspath(e), here)))
                                       .relative_to(root).as_posix()) for e in manifest])
    except ValueError:
        return manifest


def check_backbone(meta: dict, identity: dict, where: str | Path = "the bundle") -> None:
    """Refuse (BundleError) when `identity` (Backbone.identity()) is not the backbone `meta` records."""
    have = meta["backbone"]
    if identity.get("dim") != have.get("dim"):
        raise BundleError(f"{where} holds {have.get('dim')}-d vectors from {have.get('backbone')} but the backbone "
                          f"in use, {identity.get('backbone')}, gives {identity.get('dim')}-d vectors: use backbone "
                          f"{have.get('backbone')}, or rebuild the bundle with the backbone in use")
    for key, what in (("backbone", "backbone"), ("weights_id", "weights"), ("preprocessing", "preprocessing")):
        if identity.get(key) != have.get(key):
            raise BundleError(f"{where} was built with {what} {have.get(key)} but {identity.get(key)} is in use: "
                              f"use backbone {have.get('backbone')} with weights {have.get('weights_id')} (a ResNet50 "
                              "weights file: --weights FILE), or rebuild the bundle with the backbone in use")


def query_manifest(images: list[str | Path]) -> Manifest:
    """Query image files as a manifest (ids 0, 1, ... in the order given, repeats dropped), each
    checked readable first: QueryError names the first that is not. Cheap: no model is needed."""
    paths = list(dict.fromkeys(Path(p).resolve() for p in images))
    root = Path(os.path.commonpath([p.parent for p in paths]))
    entries = []
    for i, p in enumerate(paths):
        if not p.is_file():
            raise QueryError(f"{p}: no such image file")
        try:
            info = probe(p)
            digest, size = sha256_file(p)
        except ImageLoadError as err:
            raise QueryError(f"{p}: {err.reason}") from None
        except OSError as err:
            raise QueryError(f"{p}: cannot read file ({err.strerror or err})") from None
        entries.append(Entry(i, p.relative_to(root).as_posix(), digest, size, info.width, info.height,
                             info.format, "query"))
    return Manifest(root, entries)


def query_vectors(queries: Manifest, backbone: Backbone, meta: dict) -> np.ndarray:
    """Features of `queries` (see `query_manifest`), one row each in order, extracted as the
    bundle's vectors were (`features.extract`, same precision and decoding)."""
    fs = _extract_like(queries, backbone, meta, progress=False)
    if fs.failures:
        _, failed, reason = fs.failures[0]
        raise QueryError(f"{queries.root / failed}: {reason}")
    return fs.vectors


def _extract_like(manifest: Manifest, backbone: Backbone, meta: dict, progress: bool) -> FeatureSet:
    """`features.extract` with the precision and decoding the bundle's vectors were made with."""
    settings = meta["features"]
    return extract(manifest, backbone, precision=settings.get("precision") or "fp32",
                   jpeg_draft=settings.get("decode", "full") != "full", progress=progress)


@dataclass
class UpdateReport:
    """What `update` did: ids added and removed (a changed image is both), images that failed."""
    added: list[int]
    removed: list[int]
    failed: list[tuple[int, str, str]] = field(default_factory=list)
    rebuilt: str = ""   # why the index was rebuilt instead of removing in place; "" if it was not

    def __str__(self) -> str:
        text = f"{len(self.added)} added, {len(self.removed)} removed, {len(self.failed)} failed"
        return text + (f"; {self.rebuilt}" if self.rebuilt else "")


def update(bundle: Bundle, new_manifest: Manifest, backbone: Backbone, *, progress: bool = True) -> UpdateReport:
    """Bring `bundle` up to `new_manifest` (a rescan with the bundle's manifest as `previous`, so
    every unchanged image keeps its id) and save it in place.

    Extracts features only for new and changed images. Removes deleted and changed ones with
    `remove_ids` where the index supports it (Flat in an id map, IVF); an index that cannot
    (HNSW, IndexRefine) is rebuilt from the vectors it stores, said so in the report. Ids never change.
    """
    if bundle.path is None:
        raise BundleError("the bundle has not been saved yet: save it first, then update it")
    if bundle.read_only:
        raise BundleError(f"{bundle.path} was loaded memory-mapped, which is read-only: load it without mmap to update it")
    check_backbone(bundle.meta, backbone.identity(), bundle.path or "the bundle")
    old = {e.id: e for e in bundle.manifest}
    new = {e.id: e for e in new_manifest}
    for id_ in old.keys() & new.keys():
        if bundle.manifest.abspath(id_).resolve() != new_manifest.abspath(id_).resolve():
            raise BundleError(f"id {id_} is {old[id_].path} in the bundle but {new[id_].path} in the new manifest: "
                              "scan the folder with the bundle's manifest as `previous` so that ids stay stable")
    changed = {i for i in old.keys() & new.keys() if old[i].sha256 != new[i].sha256}
    removed = sorted(old.keys() - new.keys() | changed)
    todo = Manifest(new_manifest.root, [e for e in new_manifest if e.id not in old or e.id in changed])
    fs = _extract_like(todo, backbone, bundle.meta, progress) if len(todo) else FeatureSet(
        np.zeros((0, bundle.index.d), np.float32), np.zeros(0, np.int64))
    report = UpdateReport(fs.ids.tolist(), removed, fs.failures)
    if removed:
        try:
            bundle.index.remove_ids(np.asarray(removed, dtype=np.int64))
        except RuntimeError as err:
            report.rebuilt = f"{_kind(bundle.index)} cannot remove_ids ({_faiss_reason(err)}): rebuilt from its stored vectors"
            _rebuild_without(bundle.index, removed)
    if len(fs):
        x = prepare(fs.vectors, bundle.meta["metric"])
        bundle.index.add_with_ids(x, fs.ids)
    keep = (old.keys() - set(removed)) | set(report.added)
    bundle.manifest = Manifest(new_manifest.root, [e for e in new_manifest if e.id in keep])
    bundle.meta = {**bundle.meta, "updated": timestamp()}
    save(bundle, bundle.path)
    return report


def _rebuild_without(index: faiss.Index, removed: list[int]) -> None:
    """Empty `index` and add back its stored vectors but those of `removed` ids, under the same ids.
    Trained parts (PCA, quantisers) stay. Reconstruction is exact for flat storage (HNSWFlat, a
    refine stage); an index that keeps no vectors or no id map cannot do this."""
    outer = faiss.downcast_index(index)
    if not isinstance(outer, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        raise BundleError(f"{_kind(index)} can neither remove vectors nor give them back with their ids; {REBUILD}")
    ids = faiss.vector_to_array(outer.id_map)
    try:
        vectors = outer.index.reconstruct_n(0, outer.ntotal)
    except RuntimeError as err:
        raise BundleError(f"{_kind(index)} cannot give back its vectors ({_faiss_reason(err)}); {REBUILD}") from None
    keep = ~np.isin(ids, removed)
    index.reset()
    index.add_with_ids(vectors[keep], ids[keep])


def _to_cpu(index: faiss.Index) -> faiss.Index:
    """A CPU copy of a GPU index (write_index cannot write GPU memory); a CPU index as it is."""
    if hasattr(faiss, "index_gpu_to_cpu") and faiss.get_num_gpus() > 0:
        return faiss.index_gpu_to_cpu(index)
    return index


def _kind(index: faiss.Index) -> str:
    """The index's type under id maps and pre-transforms, e.g. IndexHNSWFlat."""
    return type(innermost(index)).__name__


def _faiss_reason(err: RuntimeError) -> str:
    """Faiss's own message without its C++ source location ("Error in f() at file.cpp:12: ...")."""
    text = first_line(err, last=True)
    return re.sub(r"^Error in .*? at \S+:\d+: (Error: )?", "", text).strip(" .'")
