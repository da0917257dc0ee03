"""Command line: `python -m helpers COMMAND ...` (run with --help for the list)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _manifest(args: argparse.Namespace) -> int:
    from .manifest import Manifest, ManifestError, refresh, skipped_path_for

    folder, out = Path(args.folder), Path(args.out)
    if not folder.is_dir():
        print(f"error: {folder}: no such folder", file=sys.stderr)
        return 2
    keep_ids = True
    if out.exists():
        try:
            Manifest.load(out)
        except ManifestError as err:
            print(f"warning: ignoring the existing {out} ({err}); ids start afresh", file=sys.stderr)
            keep_ids = False
    result = refresh(folder, out, keep_ids=keep_ids, progress=not args.quiet)
    manifest_path, skipped_path = out, skipped_path_for(out)
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
    p.set_defaults(func=_features)

    p = sub.add_parser("data", help="build the sample data set the settings name (SIMSEARCH_DATASET)")
    p.set_defaults(func=_data)

    p = sub.add_parser("run", help="execute every notebook headless into build/notebooks and summarise")
    p.set_defaults(func=_run)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
