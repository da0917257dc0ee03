"""Command line: `python -m helpers COMMAND ...` (run with --help for the list)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from .devices import PRECISIONS
from .fileio import first_line
from .indexes import INDEX_METRICS


def _error(message: str, code: int = 2) -> int:
    """Print one line, "error: ...", on stderr and return the exit status to give."""
    print(f"error: {message}", file=sys.stderr)
    return code


def _what_is_there(path: Path) -> str:
    """A few words on what an existing path holds, for a refusal to overwrite it."""
    if path.is_dir():
        return "a folder"
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(256)
    try:
        first = head.decode("utf-8").strip().splitlines()[0] if head.strip() else ""
    except UnicodeDecodeError:
        return f"a binary file of {size:,} bytes"
    return f"a text file of {size:,} bytes starting {first[:60]!r}" if first else f"an empty file of {size:,} bytes"


def _refuse_overwrite(outputs: dict[Path, tuple[str, Callable[[Path], bool]]], force: bool) -> str | None:
    """Why an output must not be written, or None: `outputs` maps each path a command writes to
    (what it writes, a test that an existing file is such an output). Only a command's own
    outputs are replaced; anything else needs --force, so a user's file is never lost."""
    for path, (kind, is_ours) in outputs.items():
        if path.is_dir():
            return f"{path} is a folder; give a file name"
        if path.exists() and not force and not is_ours(path):
            return (f"{path} exists and is not {kind} ({_what_is_there(path)}); left untouched. "
                    "Choose another --out, or add --force to overwrite it.")
    return None


def _is_manifest(path: Path) -> bool:
    from .manifest import Manifest, ManifestError

    try:
        Manifest.load(path)
    except ManifestError:
        return False
    return True


def _starts_with(prefix: bytes) -> Callable[[Path], bool]:
    def test(path: Path) -> bool:
        with path.open("rb") as f:
            return f.read(len(prefix)) == prefix
    return test


def _manifest(args: argparse.Namespace) -> int:
    from .manifest import SKIPPED_COLUMNS, refresh, skipped_path_for

    folder, out = Path(args.folder), Path(args.out)
    skipped_csv = skipped_path_for(out)
    if not folder.is_dir():
        return _error(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    refusal = _refuse_overwrite({
        out: ("a manifest", _is_manifest),
        skipped_csv: ("a skipped-files report", _starts_with(",".join(SKIPPED_COLUMNS).encode() + b"\n")),
    }, args.force)
    if refusal:
        return _error(refusal)
    keep_ids = out.is_file() and _is_manifest(out)     # a foreign file replaced with --force: ids afresh
    try:
        result = refresh(folder, out, keep_ids=keep_ids, progress=not args.quiet)
        manifest_path, skipped_path = out, skipped_csv
    except OSError as err:
        return _error(f"{err.filename or out}: {err.strerror or err}")
    m = result.manifest
    print(f"indexed {len(m)} files, skipped {len(result.skipped)} -> {manifest_path}"
          f" (skipped report: {skipped_path})")
    if result.changes is not None:
        print(f"since the previous manifest: {result.changes}")
    for s in result.skipped[: args.show_skipped]:
        print(f"  skipped {s.path}: {s.reason}")
    if m.duplicates():
        dups = m.duplicates()
        print(f"{len(dups)} file{' has' if len(dups) == 1 else 's have'} the same content as "
              f"another (column duplicate_of), e.g. {dups[0].path} = {m.entry(dups[0].duplicate_of).path}")
    if len(m) and not m.labelled:
        print("no labels: the images are not in two or more subfolders, so measures by label "
              "are skipped")
    if len(m) == 0:
        return _error(f"no readable image under {folder}", 1)
    return 0


def _features(args: argparse.Namespace) -> int:
    import json

    from .backbones import BackboneError, load_backbone
    from .features import FeatureError, companion_paths, extract, save_features
    from .manifest import Manifest, ManifestError
    from .settings import SettingsError, load_settings

    def features_json(path: Path) -> bool:
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(meta, dict) and {"manifest_hash", "backbone", "dim"} <= meta.keys()

    if args.engine == "ray":
        return _features_ray(args)
    try:
        settings = load_settings()  # SIMSEARCH_BACKBONE / SIMSEARCH_WEIGHTS give the defaults
        out, ids_path, meta_path = companion_paths(args.out)
        ours = features_json(meta_path)   # an .npy is ours only beside our own metadata
        npy = _starts_with(b"\x93NUMPY")
        refusal = _refuse_overwrite({
            out: ("a features file", lambda p: ours and npy(p)),
            ids_path: ("a features ids file", lambda p: ours and npy(p)),
            meta_path: ("a features metadata file", features_json)}, args.force)
        if refusal:
            return _error(refusal)
        manifest = Manifest.load(args.manifest)
        backbone = load_backbone(args.backbone or settings.backbone, args.weights or settings.weights)
        fs = extract(manifest, backbone, batch_size=args.batch_size, normalize=args.normalize,
                     precision=args.precision, jpeg_draft=args.fast_jpeg, progress=not args.quiet)
        save_features(fs, out)
    except (SettingsError, ManifestError, BackboneError, FeatureError, ValueError) as err:
        return _error(str(err))
    except OSError as err:
        return _error(f"{err.filename or args.out}: {err.strerror or err}")
    print(f"backbone {backbone.name} ({backbone.weights_id}), dimension {fs.dim}, "
          f"{fs.images_per_second:.1f} images/s ({fs.meta['precision']}, batch {fs.meta['batch_size']}, "
          f"decode {fs.meta['decode']})")
    print(f"wrote {len(fs)} vectors -> {out} (ids: {ids_path.name}, metadata: {meta_path.name}); "
          f"{len(fs.failures)} images failed")
    for id_, path, reason in fs.failures[: args.show_failed]:
        print(f"  failed {id_} {path}: {reason}")
    if len(fs) == 0:
        return _error("no image could be turned into features", 1)
    return 0


def _index(args: argparse.Namespace) -> int:
    from . import store, tuning
    from .features import FeatureError, load_features
    from .manifest import Manifest, ManifestError

    try:
        if args.budget and args.factory:
            raise ValueError("--budget chooses the factory string: give --budget or --factory, not both")
        if args.recall is not None and not 0 < args.recall <= 1:
            raise ValueError(f"--recall {args.recall}: give a recall@10 target between 0 and 1, e.g. 0.95")
        manifest = Manifest.load(args.manifest)
        features = load_features(args.features)
        factory, params, n_train, space = args.factory, _params(args.param), None, {}
        if args.budget or (args.recall is not None and not args.factory):
            rec = tuning.recommend(len(features), features.dim, args.budget, args.recall or 0.95, args.metric)
            print(f"recommended {rec}")
            factory, n_train = rec.factory, rec.n_train
            params = ",".join(p for p in (rec.fixed, params) if p) or None
            space = {"param": rec.param, "values": rec.values}
        bundle = store.build(manifest, features, factory, args.metric, params, n_train=n_train,
                             progress=not args.quiet)
        if args.recall is not None:
            tuned = store.tune(bundle, features, args.recall, fixed=params or "", **space)
            print(f"tuned on {min(tuning.OWN_QUERIES, len(features))} of its own vectors: {tuned.message}")
        store.save(bundle, args.out)
    except (ManifestError, FeatureError, store.BundleError, ValueError) as err:
        return _error(str(err))
    m = bundle.meta
    print(f"indexed {m['count']} vectors ({m['dim']}-d, {m['backbone']['backbone']}) with {m['factory']!r}, "
          f"metric {m['metric']}, search parameters {m['search_parameters'] or 'none'} -> {args.out}")
    return 0


def _params(values: list[str] | None) -> str | None:
    """--param nprobe=16 --param efSearch=64 -> "nprobe=16,efSearch=64" (ParameterSpace's form)."""
    return ",".join(values) if values else None


def _search(args: argparse.Namespace) -> int:
    import json

    from . import store
    from .backbones import BackboneError
    from .settings import SettingsError

    try:
        if args.k < 1:
            raise store.QueryError(f"-k {args.k}: ask for at least one result")
        bundle = store.load(args.bundle, mmap=args.mmap)         # verified before any model is loaded
        if args.param:
            store.set_search_parameters(bundle.index, _params(args.param))
        queries = store.query_manifest(args.images)
        backbone = _bundle_backbone(bundle.meta, args.weights)
        store.check_backbone(bundle.meta, backbone.identity(), args.bundle)
        vectors = store.query_vectors(queries, backbone, bundle.meta)
        scores, ids = bundle.search(vectors, args.k)
    except (store.BundleError, store.QueryError, BackboneError, SettingsError) as err:
        return _error(str(err))
    results = [{"query": str(queries.abspath(q)),
                "results": [{"rank": r + 1, "score": float(s), "id": int(i), "path": str(bundle.manifest.abspath(i))}
                            for r, (s, i) in enumerate(zip(scores[n], ids[n])) if i >= 0]}
               for n, q in enumerate(queries)]
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    score = "cosine" if bundle.meta["metric"] == "cosine" else "squared L2"
    for query in results:
        print(f"{query['query']}")
        for r in query["results"]:
            print(f"  {r['rank']:>3}  {r['score']:.4f}  {r['path']}")
    print(f"(score: {score}; {bundle.index.ntotal} images in {args.bundle})")
    return 0


def _bundle_backbone(meta: dict, weights: str | None):
    """The backbone a bundle records, with the weights file given (or SIMSEARCH_WEIGHTS) for ResNet50;
    a weights file given for a bundle of another backbone is refused, not ignored."""
    from .backbones import BackboneError, load_backbone
    from .settings import load_settings

    name = meta["backbone"]["backbone"]
    if weights and name != "resnet50":
        raise BackboneError(f"--weights is for a ResNet50 bundle; this one was built with {name}, which "
                            "takes no weights file: leave --weights out")
    weights = (weights or load_settings().weights) if name == "resnet50" else None
    return load_backbone(name, weights, verbose=False)


def _update(args: argparse.Namespace) -> int:
    from . import store
    from .backbones import BackboneError
    from .features import FeatureError
    from .manifest import scan
    from .settings import SettingsError

    folder = Path(args.folder)
    if not folder.is_dir():
        return _error(f"{folder}: no such folder")
    try:
        bundle = store.load(args.bundle)
        backbone = _bundle_backbone(bundle.meta, args.weights)
        result = scan(folder, bundle.manifest, progress=not args.quiet)
        report = store.update(bundle, result.manifest, backbone, progress=not args.quiet)
    except (store.BundleError, BackboneError, FeatureError, SettingsError) as err:
        return _error(str(err))
    print(f"updated {args.bundle}: {report}; it now holds {bundle.index.ntotal} images "
          f"({len(result.skipped)} files skipped by the scan)")
    for id_, path, reason in report.failed[: args.show_failed]:
        print(f"  failed {id_} {path}: {reason}")
    return 0


def _features_ray(args: argparse.Namespace) -> int:
    from .backbones import BackboneError, load_backbone
    from .features import BATCH_SIZE, FeatureError
    from .manifest import Manifest, ManifestError
    from .scale_ray import RayStartError, extract_ray, load_shards
    from .settings import SettingsError, load_settings

    try:
        settings = load_settings()
        manifest = Manifest.load(args.manifest)
        backbone = load_backbone(args.backbone or settings.backbone, args.weights or settings.weights,
                                 verbose=not args.quiet)
        out = extract_ray(manifest, backbone, args.out, concurrency=args.concurrency, address=args.address,
                          batch_size=args.batch_size or BATCH_SIZE, normalize=args.normalize,
                          precision=args.precision, jpeg_draft=args.fast_jpeg)
        fs = load_shards(out)
    except (SettingsError, ManifestError, BackboneError, FeatureError, RayStartError) as err:
        return _error(str(err))
    print(f"ray data: {fs.meta['concurrency']} actor(s), backbone {backbone.name}, dimension {fs.dim}, "
          f"{fs.images_per_second:.1f} images/s")
    print(f"wrote {len(fs)} vectors as Parquet shards -> {out}/ (metadata: features.json); "
          f"{len(fs.failures)} images failed")
    for id_, path, reason in fs.failures[: args.show_failed]:
        print(f"  failed {id_} {path}: {reason}")
    return 0 if len(fs) else 1


def _milvus_index(args: argparse.Namespace) -> int:
    import json

    from .features import FeatureError, load_features
    from .indexes import normalize
    from .manifest import Manifest, ManifestError
    from .scale_milvus import connect, create_collection, create_index, insert
    from .scale_ray import load_shards

    try:
        params = json.loads(args.params)
        source = Path(args.features)
        fs = load_shards(source) if source.is_dir() else load_features(source)
        paths = Manifest.load(args.manifest).paths_of(fs.ids) if args.manifest else None
    except (json.JSONDecodeError, FeatureError, ManifestError, KeyError) as err:
        return _error(str(err))
    try:
        client = connect(args.uri)
        create_collection(client, args.collection, fs.dim)
        count = insert(client, args.collection, fs.ids, normalize(fs.vectors), paths)
        create_index(client, args.collection, args.index_type, params)
    except Exception as err:  # pymilvus raises MilvusException and connection errors of its own
        return _error(f"milvus at {args.uri}: {first_line(err)}", 1)
    print(f"inserted {count} normalised vectors into {args.collection!r} at {args.uri}; "
          f"index {args.index_type} {params}, metric IP (cosine)")
    return 0


def _data(args: argparse.Namespace) -> int:
    from .datasets import DatasetUnavailable, ensure_dataset
    from .settings import SettingsError, load_settings

    try:
        settings = load_settings()
        folder = ensure_dataset(settings)
    except (SettingsError, DatasetUnavailable) as err:
        return _error(str(err), 1)
    print(f"data set {settings.dataset_name} ready in {folder}")
    return 0


def _launch_cells(args: argparse.Namespace) -> int:
    from .bootstrap import repository_url, write_launch_cells
    from .settings import REPO_ROOT

    url = repository_url()
    changed = write_launch_cells(REPO_ROOT / "notebooks", url)
    print(f"{len(changed)} notebook(s) updated; launch links "
          + (f"to {url}" if url else "left out: pyproject.toml names no [project.urls] Repository"))
    return 0


def _run(args: argparse.Namespace) -> int:
    from .runner import run_all
    from .settings import SettingsError

    try:
        return 1 if run_all() else 0
    except SettingsError as err:
        return _error(str(err))


#: What `make test` and `python -m helpers test` run: the notebooks in quick scale, each cell a test
#: (nbval), and the unit tests, on two workers (conftest.py keeps the notebooks in order on one).
TEST_COMMAND = ("-m", "pytest", "-n", "2", "--nbval-lax", "--nbval-cell-timeout=1200", "notebooks", "tests")


def _test(args: argparse.Namespace) -> int:
    import os
    import subprocess

    from .settings import REPO_ROOT

    command = [sys.executable, *TEST_COMMAND, *args.pytest_args]
    print(" ".join(["SIMSEARCH_SCALE=quick", "python", *command[1:]]), flush=True)
    return subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "SIMSEARCH_SCALE": "quick"}).returncode


def _parser() -> argparse.ArgumentParser:
    """The command line: one sub-command a stage, each calling its function (the argument table)."""
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("manifest", help="scan a folder of images into a manifest CSV")
    p.add_argument("folder")
    p.add_argument("--out", required=True, help="manifest CSV to write (an existing one keeps ids stable)")
    p.add_argument("--force", action="store_true", help="overwrite --out even if it is not a manifest")
    p.add_argument("--show-skipped", type=int, default=20, metavar="N", help="list up to N skipped files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_manifest)

    p = sub.add_parser("features", help="extract image features for a manifest into .npy files")
    p.add_argument("manifest", help="manifest CSV written by the manifest command")
    p.add_argument("--out", required=True,
                   help="features .npy to write; beside it <name>.ids.npy and <name>.json")
    p.add_argument("--force", action="store_true", help="overwrite files at --out that are not features")
    p.add_argument("--backbone", help="auto, or a backbone registered in helpers.backbones.REGISTRY (an "
                   "unknown name lists them); default: SIMSEARCH_BACKBONE or auto")
    p.add_argument("--weights", help="a local ResNet50 weights file (default: SIMSEARCH_WEIGHTS)")
    p.add_argument("--batch-size", type=int,
                   help="images per forward pass (default: the device's, chosen by measurement: "
                        "helpers.features.BATCH_SIZE on the CPU, GPU_BATCH_SIZE on a GPU)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="bf16: faster on CPUs with native bfloat16, slightly different features; "
                        "fp16: GPU only")
    p.add_argument("--fast-jpeg", action="store_true",
                   help="decode large JPEGs at reduced scale: faster, features move slightly")
    p.add_argument("--normalize", action="store_true", help="L2-normalise the vectors (for cosine)")
    p.add_argument("--show-failed", type=int, default=20, metavar="N", help="list up to N failed images")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="ray: a Ray Data pipeline writing Parquet shards into the folder --out (notebook 11_scaling_out)")
    p.add_argument("--address", help="with --engine ray: a Ray cluster to join (default: RAY_ADDRESS or local)")
    p.add_argument("--concurrency", type=int, default=1, help="with --engine ray: actors, one model each")
    p.set_defaults(func=_features)

    p = sub.add_parser("index", help="build an index bundle (index + manifest + metadata) from features")
    p.add_argument("manifest", help="manifest CSV written by the manifest command")
    p.add_argument("features", help="features .npy written by the features command from that manifest")
    p.add_argument("--out", required=True, help="bundle folder to write (replaced atomically if it exists)")
    p.add_argument("--factory", help="faiss.index_factory string, e.g. 'IVF1024,Flat' or 'HNSW32' (default: "
                                     "Flat under 20,000 vectors, else IVF with helpers.indexes.suggest_nlist(N) lists)")
    p.add_argument("--metric", choices=INDEX_METRICS, default="cosine",
                   help="cosine: L2-normalised vectors, inner product (default); l2: squared Euclidean")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="search parameter saved with the bundle, e.g. nprobe=16 (repeatable)")
    p.add_argument("--budget", metavar="SIZE",
                   help="memory budget, e.g. 200MB: the index is chosen by helpers.tuning.recommend (notebook 08_tuning)")
    p.add_argument("--recall", type=float, metavar="TARGET",
                   help="recall@10 target, e.g. 0.95: the search parameter is tuned to the cheapest setting "
                        "that reaches it, with a margin of one standard error, on a sample of the collection's "
                        "own vectors (and, without "
                        "--factory, the index is recommended for it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_index)

    p = sub.add_parser("search", help="find the images of a bundle nearest to query images")
    p.add_argument("bundle", help="bundle folder written by the index command")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="query image files")
    p.add_argument("-k", type=int, default=5, help="results per query (default 5)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="search parameter for this search, e.g. nprobe=16 or efSearch=64 (repeatable)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--mmap", action="store_true", help="memory-map the index instead of reading it into memory")
    p.add_argument("--weights", help="the ResNet50 weights file the bundle was built with (default: SIMSEARCH_WEIGHTS)")
    p.set_defaults(func=_search)

    p = sub.add_parser("update", help="rescan a folder and bring a bundle up to date (ids stay stable)")
    p.add_argument("bundle", help="bundle folder written by the index command")
    p.add_argument("folder", help="the folder of images the bundle indexes")
    p.add_argument("--weights", help="the ResNet50 weights file the bundle was built with (default: SIMSEARCH_WEIGHTS)")
    p.add_argument("--show-failed", type=int, default=20, metavar="N", help="list up to N failed images")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_update)
    p = sub.add_parser("milvus-index", help="load features into a Milvus collection and index them (notebook 11_scaling_out)")
    p.add_argument("features", help="a features .npy, or a folder of Parquet shards from --engine ray")
    p.add_argument("--uri", required=True, help="a local .db file (Milvus Lite) or http://host:19530 (a server)")
    p.add_argument("--collection", default="images", help="collection name (replaced if it exists)")
    p.add_argument("--manifest", help="manifest CSV, to store each image's path beside its vector")
    p.add_argument("--index-type", default="IVF_FLAT", choices=("FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW", "HNSW_SQ"))
    p.add_argument("--params", default='{"nlist": 128}', help='build parameters as JSON, e.g. \'{"M": 32, "efConstruction": 200}\'')
    p.set_defaults(func=_milvus_index)

    p = sub.add_parser("data", help="build the sample data set the settings name (SIMSEARCH_DATASET)")
    p.set_defaults(func=_data)

    p = sub.add_parser("launch-cells", help="write the Colab/Kaggle links and the first cell into every "
                       "notebook, from pyproject.toml's repository URL")
    p.set_defaults(func=_launch_cells)

    p = sub.add_parser("run", help="execute every notebook headless into build/notebooks and summarise")
    p.set_defaults(func=_run)

    p = sub.add_parser("test", help="what `make test` runs, without make: notebooks (quick scale) and unit "
                       "tests; further arguments go to pytest (e.g. -x)")
    p.set_defaults(func=_test)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.func is not _test:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.pytest_args = extra
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
