"""Command line: `python -m helpers COMMAND ...` (run with --help for the list)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _manifest(args: argparse.Namespace) -> int:
    from .manifest import Manifest, ManifestError, scan

    folder, out = Path(args.folder), Path(args.out)
    if not folder.is_dir():
        print(f"error: {folder}: no such folder", file=sys.stderr)
        return 2
    previous = None
    if out.exists():
        try:
            previous = Manifest.load(out)
        except ManifestError as err:
            print(f"warning: ignoring the existing {out} ({err}); ids start afresh", file=sys.stderr)
    result = scan(folder, previous, exclude=[out, out.with_name(out.name.removesuffix(".csv") + ".skipped.csv")],
                  progress=not args.quiet)
    manifest_path, skipped_path = result.save(out)
    print(f"indexed {len(result.manifest)} files, skipped {len(result.skipped)} -> {manifest_path}"
          f" (skipped report: {skipped_path})")
    if result.changes is not None:
        print(f"since the previous manifest: {result.changes}")
    for s in result.skipped[: args.show_skipped]:
        print(f"  skipped {s.path}: {s.reason}")
    if len(result.manifest) == 0:
        print(f"error: no readable image under {folder}", file=sys.stderr)
        return 1
    return 0


def _features(args: argparse.Namespace) -> int:
    from .backbones import BackboneError, load_backbone
    from .features import BATCH_SIZE, FeatureError, companion_paths, extract, save_features
    from .manifest import Manifest, ManifestError
    from .settings import SettingsError, load_settings

    if args.engine == "ray":
        return _features_ray(args)
    try:
        settings = load_settings()  # SIMSEARCH_BACKBONE / SIMSEARCH_WEIGHTS give the defaults
        out, ids_path, meta_path = companion_paths(args.out)
        manifest = Manifest.load(args.manifest)
        backbone = load_backbone(args.backbone or settings.backbone, args.weights or settings.weights)
        fs = extract(manifest, backbone, batch_size=args.batch_size or BATCH_SIZE, normalize=args.normalize,
                     precision=args.precision, jpeg_draft=args.fast_jpeg, progress=not args.quiet)
        save_features(fs, out)
    except (SettingsError, ManifestError, BackboneError, FeatureError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"backbone {backbone.name} ({backbone.weights_id}), dimension {fs.dim}, "
          f"{fs.images_per_second:.1f} images/s ({fs.meta['precision']}, batch {fs.meta['batch_size']}, "
          f"decode {fs.meta['decode']})")
    print(f"wrote {len(fs)} vectors -> {out} (ids: {ids_path.name}, metadata: {meta_path.name}); "
          f"{len(fs.failures)} images failed")
    for id_, path, reason in fs.failures[: args.show_failed]:
        print(f"  failed {id_} {path}: {reason}")
    if len(fs) == 0:
        print("error: no image could be turned into features", file=sys.stderr)
        return 1
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
        print(f"error: {err}", file=sys.stderr)
        return 2
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
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        client = connect(args.uri)
        create_collection(client, args.collection, fs.dim)
        count = insert(client, args.collection, fs.ids, normalize(fs.vectors), paths)
        create_index(client, args.collection, args.index_type, params)
    except Exception as err:  # pymilvus raises MilvusException and connection errors of its own
        print(f"error: milvus at {args.uri}: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"inserted {count} normalised vectors into {args.collection!r} at {args.uri}; "
          f"index {args.index_type} {params}, metric IP (cosine)")
    return 0


def _data(args: argparse.Namespace) -> int:
    from .datasets import DatasetUnavailable, ensure_dataset
    from .settings import load_settings

    settings = load_settings()
    try:
        folder = ensure_dataset(settings)
    except DatasetUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"data set {settings.dataset_name} ready in {folder}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from .runner import run_all

    return 1 if run_all() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("manifest", help="scan a folder of images into a manifest CSV")
    p.add_argument("folder")
    p.add_argument("--out", required=True, help="manifest CSV to write (an existing one keeps ids stable)")
    p.add_argument("--show-skipped", type=int, default=20, metavar="N", help="list up to N skipped files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_manifest)

    p = sub.add_parser("features", help="extract image features for a manifest into .npy files")
    p.add_argument("manifest", help="manifest CSV written by the manifest command")
    p.add_argument("--out", required=True,
                   help="features .npy to write; beside it <name>.ids.npy and <name>.json")
    p.add_argument("--backbone", choices=("auto", "resnet50", "efficientnet_lite0", "random_resnet50"),
                   help="default: SIMSEARCH_BACKBONE or auto")
    p.add_argument("--weights", help="a local ResNet50 weights file (default: SIMSEARCH_WEIGHTS)")
    p.add_argument("--batch-size", type=int,
                   help="images per forward pass (default: helpers.features.BATCH_SIZE, chosen by measurement)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: faster on CPUs with native bfloat16, slightly different features")
    p.add_argument("--fast-jpeg", action="store_true",
                   help="decode large JPEGs at reduced scale: faster, features move slightly")
    p.add_argument("--normalize", action="store_true", help="L2-normalise the vectors (for cosine)")
    p.add_argument("--show-failed", type=int, default=20, metavar="N", help="list up to N failed images")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="ray: a Ray Data pipeline writing Parquet shards into the folder --out (notebook 11)")
    p.add_argument("--address", help="with --engine ray: a Ray cluster to join (default: RAY_ADDRESS or local)")
    p.add_argument("--concurrency", type=int, default=1, help="with --engine ray: actors, one model each")
    p.set_defaults(func=_features)

    p = sub.add_parser("milvus-index", help="load features into a Milvus collection and index them (notebook 11)")
    p.add_argument("features", help="a features .npy, or a folder of Parquet shards from --engine ray")
    p.add_argument("--uri", required=True, help="a local .db file (Milvus Lite) or http://host:19530 (a server)")
    p.add_argument("--collection", default="images", help="collection name (replaced if it exists)")
    p.add_argument("--manifest", help="manifest CSV, to store each image's path beside its vector")
    p.add_argument("--index-type", default="IVF_FLAT", choices=("FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW", "HNSW_SQ"))
    p.add_argument("--params", default='{"nlist": 128}', help='build parameters as JSON, e.g. \'{"M": 32, "efConstruction": 200}\'')
    p.set_defaults(func=_milvus_index)

    p = sub.add_parser("data", help="build the sample data set the settings name (SIMSEARCH_DATASET)")
    p.set_defaults(func=_data)

    p = sub.add_parser("run", help="execute every notebook headless into build/notebooks and summarise")
    p.set_defaults(func=_run)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
