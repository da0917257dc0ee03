"""Every index type on one database: recall@10, QPS, memory and build time, and the course's goals.

    nice python benchmarks/bench_indexes.py                          # 100,000 x 2048, 1,000 queries
    python benchmarks/bench_indexes.py --n 20000 --d 256 --nq 200      # a check in about a minute
    python benchmarks/bench_indexes.py --features real.npy             # your own (n, d) features

The metric is the course's: cosine similarity, i.e. every vector L2-normalised
(`faiss.normalize_L2`) and searched by inner product (`faiss.METRIC_INNER_PRODUCT`).
The database is "real" features plus distractors fitted to them with the course's model
(helpers.distractors: full-rank covariance, the spectrum the real features show); the real ones
are synthetic stand-ins (clustered, non-negative, 1/i spectrum) unless --features is given, for
example the Fashion-MNIST features benchmarks/bench_haystack.py caches.
Queries are real features held out of the database; ground truth is exact search
(`helpers.evaluate.ground_truth`). Every index is built as the notebooks build it: a
`faiss.index_factory` string (PQ with `np`: no polysemous training, which these searches never
use), `train` with Faiss's BLAS threshold at 0 (notebook 05_product_quantization), `add_with_ids`. Indexes with a PCA step are built
with METRIC_L2 instead: PCA subtracts the vectors' mean, which changes inner products (and the
ranking: non-negative CNN features have a large mean) but not L2 distances, and on unit vectors
L2 ranks exactly as cosine. Search parameters are set with
`faiss.ParameterSpace` strings ("nprobe=16", "efSearch=32,k_factor_rf=4") by
`helpers.evaluate.measure` / `sweep`.

IVF and HNSW (Faiss's and hnswlib's alike) are swept (nprobe, efSearch) and measured at their
first setting with recall@10 >= 0.95; compressed indexes are measured at nprobe 16. Memory is
the serialized index, ids included: a refine stage keeps every full vector, so it counts.
hnswlib's HNSW, with the same M and efConstruction, is the peer. HNSW is also measured on
PCA-reduced vectors with exact re-ranking (PCA256,HNSW32,RFlat): the usual answer when
full-dimension graph walks are too slow. The last lines are goal lines (benchmarks/_goal.py);
the PCA variant's line is extra, the plain HNSWFlat line is the course's goal.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import helpers  # noqa: E402,F401  (before faiss: it chooses Faiss's BLAS kernels, helpers/blas.py)
import faiss  # noqa: E402
from benchmarks._goal import goal  # noqa: E402
from helpers import distractors, evaluate, indexes as ix  # noqa: E402
from helpers.presentation import Table  # noqa: E402

TARGET_RECALL = 0.95
COMPRESSED_NPROBE = 16
REFINE_FACTOR = 4


def make_data(args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-norm database vectors, their ids, and held-out real queries (unit norm too)."""
    rng = np.random.default_rng(args.seed)
    if args.features:
        real = ix.as_float32_matrix(np.load(args.features), name=args.features)
    else:
        real, _ = distractors.synthetic_features(args.n_real + args.nq, args.d, n_classes=max(1, args.n_real // 100),
                                                 seed=args.seed)
    real = ix.normalize(real[rng.permutation(len(real))])   # cosine: unit vectors, inner product
    queries, real_db = real[:args.nq], real[args.nq:args.nq + args.n]
    n_fill = args.n - len(real_db)
    xb, ids = distractors.with_distractors(real_db, np.arange(len(real_db)) * 10 + 7, n_fill, args.seed + 1)
    print(f"database {len(xb):,} x {xb.shape[1]} = {len(real_db):,} real + {n_fill:,} distractors (unit "
          f"vectors, cosine); {len(queries):,} held-out real queries", flush=True)
    return xb, ids, queries


def pq_m(d: int) -> int:
    """PQ sub-quantisers for dimension d: 64 when d allows (d = 2048 or 256), at least 4 dimensions each."""
    return max(x for x in range(1, min(64, max(1, d // 4)) + 1) if d % x == 0)


def metric_for(key: str) -> str:
    """cosine (inner product on unit vectors), or l2 behind a PCA (see the docstring)."""
    return "l2" if "PCA" in key else "cosine"


def build(key: str, xb, ids, train_x, ef_construction: int | None = None) -> tuple[faiss.Index, float, float]:
    """`helpers.indexes.build` of `key` with `metric_for(key)`: the index and its train and add seconds."""
    times = {}
    index = ix.build(key, xb, ids, metric_for(key), train=train_x, ef_construction=ef_construction, times=times)
    return index, times["train s"], times["add s"]


def hnswlib_sweep(xb, ids, queries, truth, M, ef_construction, efs, k, repeats, threads) -> tuple[Table, dict]:
    """hnswlib's HNSW over the same unit vectors by inner product: an efSearch sweep and its build facts."""
    import hnswlib

    index = hnswlib.Index(space="ip", dim=xb.shape[1])   # 1 - inner product: cosine on unit vectors
    start = time.perf_counter()
    index.init_index(max_elements=len(xb), ef_construction=ef_construction, M=M, random_seed=100)
    index.set_num_threads(threads)
    index.add_items(xb, ids)
    facts = {"train s": 0.0, "add s": time.perf_counter() - start, "memory MB": index.index_file_size() / 1e6}
    table = Table(title=f"hnswlib: recall@{k} and QPS against efSearch")
    for ef in efs:
        index.set_ef(ef)
        found = index.knn_query(queries, k)[0].astype(np.int64)
        seconds = evaluate.median_seconds(lambda: index.knn_query(queries, k), repeats)
        table.append({"index": "hnswlib", "efSearch": ef, f"recall@{k}": evaluate.recall_at_k(found, truth, k),
                      "1-recall@1": evaluate.one_recall_at_1(found, truth), "QPS": len(queries) / seconds})
    return table, facts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="database vectors (real + distractors)")
    p.add_argument("--d", type=int, default=2048, help="dimension of the synthetic features")
    p.add_argument("--nq", type=int, default=1_000, help="held-out real queries")
    p.add_argument("--n-real", type=int, default=10_000, help="synthetic real features in the database")
    p.add_argument("--features", help="a .npy file of real features (n, d) instead of synthetic ones")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--M", type=int, default=32, help="HNSW links a node (Faiss and hnswlib)")
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; QPS is their median")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=faiss.omp_get_max_threads(), help="for Faiss and hnswlib")
    p.add_argument("--skip-hnswlib", action="store_true")
    args = p.parse_args(argv)
    k, repeats, started = args.k, args.repeats, time.perf_counter()
    faiss.omp_set_num_threads(args.threads)
    print(f"Faiss {faiss.__version__}, {args.threads} threads", flush=True)

    xb, ids, queries = make_data(args)
    n, d = xb.shape
    truth = evaluate.ground_truth(xb, ids, queries, k)
    nlist = ix.suggest_nlist(n)
    per_centroid = ix.MIN_POINTS_PER_CENTROID   # IVF's nlist centroids and PQ's 256 per sub-quantiser
    train_x = xb[np.random.default_rng(args.seed).choice(n, min(n, per_centroid * max(nlist, 256)), replace=False)]
    d_pca = min(256, d // 2)
    m, m_pca = pq_m(d), pq_m(d_pca)
    print(f"nlist {nlist} (suggest_nlist), {len(train_x):,} training vectors, PQ m={m}, PCA to {d_pca}", flush=True)

    rows = Table(title=f"{n:,} x {d}, {len(queries):,} queries, k={k}, cosine (inner product on unit vectors)")

    def run(key: str, params: str = "", ef_construction: int | None = None) -> dict:
        index, train_s, add_s = build(key, xb, ids, train_x, ef_construction)
        row = evaluate.measure(key, index, queries, truth, k, params=params, repeats=repeats, single_queries=20,
                               train_s=train_s, add_s=add_s)
        rows.append(row)
        print(f"  {key} {params}: recall@{k} {row[f'recall@{k}']:.3f}, QPS {row['QPS']:,.0f}, "
              f"{row['memory MB']:.1f} MB, build {train_s + add_s:.1f} s", flush=True)
        return row

    def swept(key: str, param: str, values: list, fixed: str = "", ef_construction: int | None = None) -> dict:
        """Sweep `param`, then measure the first value reaching TARGET_RECALL (else the last)."""
        index, train_s, add_s = build(key, xb, ids, train_x, ef_construction)
        if fixed:
            faiss.ParameterSpace().set_index_parameters(index, fixed)
        table = evaluate.sweep(key, index, queries, truth, param, values, k, repeats=repeats)
        print(table.to_text(), flush=True)
        best = table.first(lambda r: r[f"recall@{k}"] >= TARGET_RECALL) or table[-1]
        params = ",".join(x for x in (fixed, f"{param}={best[param]}") if x)
        row = evaluate.measure(key, index, queries, truth, k, params=params, repeats=repeats, single_queries=20,
                               train_s=train_s, add_s=add_s)
        rows.append(row)
        return row

    with ix.blas_threshold(0):    # Flat at its best, whatever the batch (see notebook 03_flat_index)
        flat_row = run("IDMap,Flat")
    flat_qps, flat_mb = flat_row["QPS"], flat_row["memory MB"]

    ivf_row = swept(f"IVF{nlist},Flat", "nprobe", [v for v in (1, 2, 4, 8, 16, 32, 64, 128) if v <= nlist])
    nprobe = f"nprobe={min(COMPRESSED_NPROBE, nlist)}"
    run(f"IDMap,PQ{m}np")
    run(f"IVF{nlist},PQ{m}np", nprobe)
    run(f"IDMap,IVF{nlist},PQ{m}np,RFlat", f"{nprobe},k_factor_rf=8")
    run(f"PCA{d_pca},IVF{nlist},PQ{m_pca}np", nprobe)
    run(f"OPQ{m_pca}_{d_pca},IVF{nlist},PQ{m_pca}np", nprobe)
    swept(f"PCA{d_pca},IVF{nlist},SQ8", "nprobe", [v for v in (4, 16, 64) if v <= nlist])

    efs = [16, 24, 32, 48, 64, 96, 128, 256]
    hnsw_row = swept(f"IDMap,HNSW{args.M}", "efSearch", efs, ef_construction=args.ef_construction)
    # A 2048-d graph walk reads 8 KB a visited vector: walk a PCA-reduced copy instead, then
    # re-rank k_factor*k candidates with exact full-dimension inner products.
    pca_hnsw_row = swept(f"IDMap,PCA{d_pca},HNSW{args.M},RFlat", "efSearch", efs,
                         fixed=f"k_factor_rf={REFINE_FACTOR}", ef_construction=args.ef_construction)

    peer_row = None
    if not args.skip_hnswlib:
        table, facts = hnswlib_sweep(xb, ids, queries, truth, args.M, args.ef_construction, efs, k, repeats,
                                     args.threads)
        print(table.to_text(), flush=True)
        peer_row = dict(table.first(lambda r: r[f"recall@{k}"] >= TARGET_RECALL) or table[-1])
        peer_row.update(index=f"hnswlib M{args.M} efC{args.ef_construction}", setting=f"ef={peer_row.pop('efSearch')}",
                        **facts)
        rows.append(peer_row)

    print()
    print(rows.to_text())
    compressed = [r for r in rows if r["memory MB"] <= flat_mb / 16]
    best = max(compressed, key=lambda r: r[f"recall@{k}"], default=None)
    print(f"\nat recall@{k} >= {TARGET_RECALL}: IVF {ivf_row['setting']}, HNSW {hnsw_row['setting']}"
          + (f", hnswlib {peer_row['setting']}" if peer_row else ""))
    for row in (ivf_row, hnsw_row, pca_hnsw_row):
        print(f"{row['index']} one query at a time: {row['QPS 1-by-1'] / flat_row['QPS 1-by-1']:.0f}x Flat's QPS")
    if best:
        print(f"best compressed index: {best['index']} at {flat_mb / best['memory MB']:.1f}x less memory than Flat")
    print(f"total {time.perf_counter() - started:.0f} s\n")

    def qps_ratio(row, base):
        return row["QPS"] / base if row[f"recall@{k}"] >= TARGET_RECALL else None

    goal(f"ivf_qps_over_flat_at_recall{TARGET_RECALL}", qps_ratio(ivf_row, flat_qps), 5)
    goal(f"hnsw_qps_over_flat_at_recall{TARGET_RECALL}", qps_ratio(hnsw_row, flat_qps), 15)
    goal(f"pca_hnsw_refine_qps_over_flat_at_recall{TARGET_RECALL}", qps_ratio(pca_hnsw_row, flat_qps), 15)
    if peer_row:
        ratio = qps_ratio(hnsw_row, peer_row["QPS"]) if peer_row[f"recall@{k}"] >= TARGET_RECALL else None
        goal(f"hnsw_qps_over_hnswlib_at_recall{TARGET_RECALL}", ratio, 1.0)
    goal(f"compressed_recall@{k}_at_1/16_flat_memory", best[f"recall@{k}"] if best else None, 0.85, unit="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
