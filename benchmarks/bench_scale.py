"""Past one machine, measured in one run (notebook 11_scaling_out): Ray Data's overhead, Milvus Lite beside Faiss.

1. Extraction: `helpers.features.extract` and `helpers.scale_ray.extract_ray` (one actor with
   all cores' threads) on the same JPEGs (bench_features.py's generator: 640x480 crops of bundled
   photos) with the same loaded backbone. Ray's time runs from building the dataset to the
   Parquet shards written, actor start-up (which receives the model) included. Each side is warmed
   up on 8 of the images first; Ray's warm-up is its first dataset, which starts Ray Data's own
   per-instance actors (statistics, autoscaling) and worker processes. `ray.init` and the warm-up
   are timed apart, as on a cluster that is already running, and both are printed. The two run in
   pairs, one after the other (`--pairs`, default 3): this machine's speed drifts between runs by
   more than the overhead measured (extract alone gave 16 to 22 images/s on the same 1,000 JPEGs
   in one session), so each pair gives a ratio and the goal takes the median.
2. Serving: the course database (SIMSEARCH_SCALE decides its size) normalised for cosine, in
   Faiss and in Milvus Lite with the same index type and parameters (IVF_FLAT: nlist, nprobe;
   HNSW: M, efConstruction, efSearch/ef). recall@10 against Faiss's exact search, and queries
   per second on the same batch of queries, as a ratio to Faiss's.

Goal lines (benchmarks/_goal.py): Ray >= 0.85x extract's images/s (median of the pairs); Milvus
Lite's recall@10 within 0.02 of Faiss's for each index. The QPS ratios are reported, with no target.

    python benchmarks/bench_scale.py                        # 1,000 JPEGs, random ResNet50
    SIMSEARCH_SCALE=quick python benchmarks/bench_scale.py --n 100 --index ivf
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import helpers  # noqa: E402,F401  (before faiss: it chooses Faiss's BLAS kernels, helpers/blas.py)
import faiss  # noqa: E402
from benchmarks._goal import goal  # noqa: E402
from benchmarks.bench_features import Clock, write_jpegs  # noqa: E402
from helpers.backbones import load_backbone  # noqa: E402
from helpers.database import CourseDatabase  # noqa: E402
from helpers.datasets import ensure_dataset  # noqa: E402
from helpers.evaluate import median_seconds, recall_at_k  # noqa: E402
from helpers.features import extract, load_or_extract  # noqa: E402
from helpers.manifest import refresh, scan  # noqa: E402
from helpers.scale_milvus import connect, create_collection, create_index, insert, search  # noqa: E402
from helpers.scale_ray import RayStartError, extract_ray, load_shards, start_ray  # noqa: E402
from helpers.settings import load_settings  # noqa: E402

GOAL_RAY, GOAL_RECALL_GAP = 0.85, 0.02


def bench_ray(n: int, backbone_name: str, concurrency: int, pairs: int) -> None:
    start = time.perf_counter()
    try:
        start_ray()
    except RayStartError as err:
        goal("ray_data_vs_extract_images_per_s", None, GOAL_RAY, skipped=str(err))
        return
    print(f"ray.init: {time.perf_counter() - start:.1f} s (not counted below)")
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        write_jpegs(Path(tmp) / "jpegs", n)
        manifest = scan(Path(tmp) / "jpegs", progress=False).manifest
        backbone = load_backbone(backbone_name, verbose=False)
        first8 = type(manifest)(manifest.root, list(manifest)[:8])
        extract(first8, backbone, progress=False)
        start = time.perf_counter()
        extract_ray(first8, backbone, Path(tmp) / "warm-up", concurrency=concurrency)
        print(f"Ray Data's first dataset (8 images): {time.perf_counter() - start:.1f} s (not counted below)")
        print(f"{n} JPEGs 640x480, backbone {backbone_name}, {os.cpu_count()} CPUs; {pairs} pairs, "
              f"each extract then Ray Data ({concurrency} actor{'s' if concurrency > 1 else ''})")
        ratios = []
        for pair in range(1, pairs + 1):
            clocks = {"extract": Clock(), "ray": Clock()}
            local = clocks["extract"].time(extract, manifest, backbone, progress=False)
            out = clocks["ray"].time(extract_ray, manifest, backbone, Path(tmp) / "shards", concurrency=concurrency)
            ray_fs = load_shards(out)
            cos = (ray_fs.vectors * local.vectors).sum(1) / (
                np.linalg.norm(ray_fs.vectors, axis=1) * np.linalg.norm(local.vectors, axis=1))
            rates = {name: clock.rate(n) for name, clock in clocks.items()}
            ratios.append(rates["ray"] / rates["extract"])
            print(f"pair {pair}: extract {rates['extract']:5.1f} images/s {clocks['extract'].note()}; "
                  f"ray data {rates['ray']:5.1f} images/s {clocks['ray'].note()}; ratio {ratios[-1]:.3f}; "
                  f"{len(list(out.glob('*.parquet')))} shards; cosine to extract's min {cos.min():.6f}")
        goal("ray_data_vs_extract_images_per_s", float(np.median(ratios)), GOAL_RAY)


def bench_milvus(indexes: list[str], nprobe: int, ef: int) -> None:
    settings = load_settings()
    manifest = refresh(ensure_dataset(settings), settings.work_dir / "manifest.csv", progress=False).manifest
    features, _ = load_or_extract(manifest, load_backbone(settings.backbone, settings.weights, verbose=False),
                                  settings.work_dir, progress=False)
    db = CourseDatabase(features, manifest, settings.scale)
    xb, xq, ids, k = db.xb.copy(), db.queries.copy(), db.ids, 10
    faiss.normalize_L2(xb)
    faiss.normalize_L2(xq)
    d = xb.shape[1]
    exact = faiss.IndexIDMap(faiss.IndexFlatIP(d))
    exact.add_with_ids(xb, ids)
    truth = exact.search(xq, k)[1]
    nlist = min(int(4 * np.sqrt(len(xb))), len(xb) // 39)
    print(f"\ncourse database ({settings.scale}): {len(xb):,} x {d}, {len(xq)} queries, k={k}")
    with tempfile.TemporaryDirectory(prefix="bench_milvus_") as tmp:
        client = connect(Path(tmp) / "milvus.db")
        create_collection(client, "bench", d)
        start = time.perf_counter()
        insert(client, "bench", ids, xb)
        print(f"Milvus Lite insert: {len(xb) / (time.perf_counter() - start):,.0f} vectors/s")
        cases = {"ivf": (f"IVF{nlist},Flat", "IVF_FLAT", {"nlist": nlist}, f"nprobe={nprobe}", {"nprobe": nprobe}),
                 "hnsw": ("HNSW32,Flat", "HNSW", {"M": 32, "efConstruction": 40}, f"efSearch={ef}", {"ef": ef})}
        for key in indexes:
            factory, milvus_type, build, faiss_params, milvus_params = cases[key]
            index = faiss.index_factory(d, ("IDMap," if key == "hnsw" else "") + factory, faiss.METRIC_INNER_PRODUCT)
            if key == "hnsw":
                faiss.downcast_index(index.index).hnsw.efConstruction = 40
            index.train(xb)
            index.add_with_ids(xb, ids)
            faiss.ParameterSpace().set_index_parameters(index, faiss_params)
            create_index(client, "bench", milvus_type, build)
            f_recall = recall_at_k(index.search(xq, k)[1], truth, k)
            m_recall = recall_at_k(search(client, "bench", xq, k, milvus_params)[1], truth, k)
            f_qps = len(xq) / median_seconds(lambda: index.search(xq, k))
            m_qps = len(xq) / median_seconds(lambda: search(client, "bench", xq, k, milvus_params))
            print(f"{milvus_type} {build} {milvus_params}: recall@10 Faiss {f_recall:.4f}, Milvus Lite {m_recall:.4f}; "
                  f"QPS Faiss {f_qps:,.0f}, Milvus Lite {m_qps:,.0f}")
            goal(f"milvus_lite_{key}_recall@10_gap_to_faiss", abs(m_recall - f_recall), GOAL_RECALL_GAP,
                 unit="", higher_is_better=False)
            print(f"reported: milvus_lite_{key}_qps_over_faiss {m_qps / f_qps:.3f}x (no target)")
        client.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="JPEGs for the extraction part (default 1000)")
    ap.add_argument("--backbone", default="random_resnet50", help="as in bench_features.py (default random_resnet50)")
    ap.add_argument("--concurrency", type=int, default=1, help="Ray actors (default 1, with all cores' threads)")
    ap.add_argument("--pairs", type=int, default=3, help="extract-then-Ray pairs; the goal takes the median ratio")
    ap.add_argument("--index", nargs="+", default=["ivf", "hnsw"], choices=["ivf", "hnsw"])
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--ef", type=int, default=64)
    ap.add_argument("--skip", choices=["ray", "milvus"], help="leave one part out")
    args = ap.parse_args(argv)
    if args.skip != "ray":
        bench_ray(args.n, args.backbone, args.concurrency, args.pairs)
    if args.skip != "milvus":
        bench_milvus(args.index, args.nprobe, args.ef)
    return 0


if __name__ == "__main__":
    sys.exit(main())
