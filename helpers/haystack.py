"""Real images for a haystack: two image sets that install from Debian's packages, as features.

- `fashion_mnist`: product photos (`apt-get install dataset-fashion-mnist`; torchvision's
  download where online), written as PNG files per class (helpers.datasets), 60,000 at most;
- `openclipart`: about 8,000 clip-art PNGs (`apt-get install openclipart-png`), a different
  domain, scanned where they are installed and never copied.

Their features (the course's backbone) are extracted once and cached by `load_or_extract`; they
serve `benchmarks/bench_haystack.py`, which checks the synthetic distractors against them, and
`SIMSEARCH_HAYSTACK=real`, where they fill the course database instead of distractors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .backbones import Backbone
from .datasets import FASHION_CLASSES, DatasetUnavailable, build_fashion_mnist
from .features import FeatureSet, load_or_extract
from .indexes import normalize
from .manifest import Manifest, refresh
from .settings import REPO_ROOT

OPENCLIPART_DIR = Path("/usr/share/openclipart/png")
FASHION_TRAIN_SIZE = 60_000
#: Fashion-MNIST images written per class: the smallest step that holds what is asked, so that a
#: few folders (and feature caches) serve every size
FASHION_STEPS = (200, 1_200, FASHION_TRAIN_SIZE // 10)
BENCH_RESULTS = REPO_ROOT / "build" / "bench_haystack" / "results.json"   # benchmarks/bench_haystack.py writes it
REAL_SETS = {
    "fashion_mnist": "Fashion-MNIST product photos (Debian: dataset-fashion-mnist)",
    "openclipart": f"Openclipart clip-art PNGs (Debian: openclipart-png, {OPENCLIPART_DIR})",
}


def real_set_folder(name: str, data_dir: str | Path, n: int) -> Path:
    """The folder of at least `n` images of set `name` (or all there are), built when needed."""
    if name == "openclipart":
        if not OPENCLIPART_DIR.is_dir():
            raise DatasetUnavailable(f"{OPENCLIPART_DIR}: not found; install Debian's openclipart-png "
                                     "(apt-get install openclipart-png)")
        return OPENCLIPART_DIR
    if name == "fashion_mnist":
        wanted = -(-n // len(FASHION_CLASSES))
        per_class = next((step for step in FASHION_STEPS if step >= wanted), FASHION_STEPS[-1])
        folder = Path(data_dir) / "haystack" / f"fashion_mnist_{per_class}"
        if not folder.is_dir():
            build_fashion_mnist(folder.with_name(folder.name + ".partial"), per_class=per_class, split="train",
                                cache_dir=Path(data_dir) / "haystack" / "cache")
            folder.with_name(folder.name + ".partial").rename(folder)
        return folder
    raise ValueError(f"real image set {name!r}: use one of {', '.join(REAL_SETS)}")


def real_features(name: str, backbone: Backbone, data_dir: str | Path, n: int,
                  progress: bool = True) -> tuple[FeatureSet, Manifest, str]:
    """Features of the images of set `name` (at least `n` where the set has them), the manifest
    they index and the cache's status ("cache hit" or why it extracted)."""
    folder = real_set_folder(name, data_dir, n)
    work = Path(data_dir) / "haystack" / f"{name}-{folder.name}"
    work.mkdir(parents=True, exist_ok=True)
    manifest = refresh(folder, work / "manifest.csv", progress=progress).manifest
    features, status = load_or_extract(manifest, backbone, work / backbone.name, progress=progress)
    return features, manifest, status


# ---------------------------------------------------------------- does a haystack behave like real features?

def directions_for(x, share: float = 0.9) -> int:
    """How many principal directions hold `share` of the variance of `x` (n, d)."""
    from .distractors import sample_spectrum

    cumulative = np.cumsum(sample_spectrum(x))
    return int(np.searchsorted(cumulative, share * cumulative[-1]) + 1)


def index_recalls(xb, queries, k: int = 10, nprobes=(1, 2, 4, 8, 16, 32), efs=(8, 16, 32, 64),
                  compressed: bool = True) -> dict[str, float]:
    """recall@k of the course's indexes on database `xb` (unit vectors, cosine) for `queries`:
    IVF (suggest_nlist) against nprobe, HNSW32 against efSearch and, with `compressed`,
    IVF,PQ with m = 16/32/64 and PCA-then-PQ and OPQ at 64 bytes a vector, at nprobe 16."""
    import faiss

    from .evaluate import ground_truth, recall_at_k
    from .indexes import build, suggest_nlist

    n, d = xb.shape
    truth = ground_truth(xb, np.arange(n), queries, k)
    nlist = suggest_nlist(n)
    out: dict[str, float] = {}

    def recall(index, params: str) -> float:
        faiss.ParameterSpace().set_index_parameters(index, params)
        return recall_at_k(index.search(queries, k)[1], truth, k)

    ivf = build(f"IVF{nlist},Flat", xb)
    out.update({f"IVF{nlist},Flat nprobe={p}": recall(ivf, f"nprobe={p}") for p in nprobes})
    hnsw = build("HNSW32", xb)
    out.update({f"HNSW32 efSearch={ef}": recall(hnsw, f"efSearch={ef}") for ef in efs})
    if compressed:
        small = min(256, d)
        keys = [f"IVF{nlist},PQ{m}np" for m in (16, 32, 64) if d % m == 0]
        keys += [f"PCA{small},IVF{nlist},PQ64np", f"OPQ64_{small},IVF{nlist},PQ64np"]
        for key in keys:   # behind PCA, L2 on unit vectors (PCA subtracts the mean: notebook 05_product_quantization)
            index = build(key, xb, metric="l2" if key.startswith("PCA") else "cosine")
            out[f"{key} nprobe=16"] = recall(index, "nprobe=16")
    return out


def compare_haystacks(real, queries, n_fit: int = 90, tails=("power_law",), seed: int = 0,
                      **recall_options) -> dict[str, dict]:
    """Database A: the `real` unit vectors; database B for each tail: the first `n_fit` of them
    plus distractors fitted on those (as the course builds its database), as many vectors as A.
    The same real `queries` search both. Returns {"A": ..., "B " + tail: ...}, each with
    `index_recalls`, "directions for 90%", the size and the median cosine of a query's nearest."""
    from .distractors import DistractorModel

    real = normalize(real)
    fit = real[:n_fit]
    databases = {"A": real}
    for tail in tails:
        model = DistractorModel.fit(fit, tail=tail, seed=seed)
        databases[f"B {tail}"] = np.vstack([fit, model.sample(len(real) - n_fit, seed + 1)[0]])
    return {name: {"recall": index_recalls(xb, queries, **recall_options),
                   "directions for 90%": directions_for(xb), "n": len(xb),
                   "nearest cosine, median": float(np.median((queries @ xb.T).max(axis=1)))}
            for name, xb in databases.items()}


# ---------------------------------------------------------------- a haystack of real images (SIMSEARCH_HAYSTACK=real)

def real_haystack(backbone: Backbone, data_dir: str | Path, n: int, progress: bool = True) -> tuple[np.ndarray, list]:
    """Up to `n` real images to fill the course database: Fashion-MNIST's first, then
    Openclipart's, each set used only where its Debian package (or a download) is there.

    Returns their unit feature vectors and manifest entries in the same order: ids from
    DISTRACTOR_ID_START up, absolute paths, labels "<set>:<label>". Prints what it used and what
    the extraction took (once; cached after).
    """
    from dataclasses import replace

    from .distractors import DISTRACTOR_ID_START

    if n <= 0:   # the real images fill the database by themselves
        return np.zeros((0, backbone.dim), np.float32), []
    vectors, entries = [], []
    for name in REAL_SETS:
        left = n - sum(len(v) for v in vectors)
        if left <= 0:
            break
        try:
            fs, manifest, status = real_features(name, backbone, data_dir, left, progress)
        except DatasetUnavailable as err:
            print(f"haystack: {name} skipped: {err}")
            continue
        took = "" if status == "cache hit" else f", extracted in {len(fs) / fs.images_per_second:,.0f} s"
        print(f"haystack: {min(left, len(fs)):,} of {len(fs):,} {REAL_SETS[name]} ({status}{took})")
        vectors.append(normalize(fs.vectors[:left]))
        for i in fs.ids[:left]:
            e = manifest.entry(i)
            entries.append(replace(e, id=DISTRACTOR_ID_START + len(entries), path=manifest.abspath(e).as_posix(),
                                   label=f"{name}:{e.label}", duplicate_of=None))
    if not entries:
        raise DatasetUnavailable("SIMSEARCH_HAYSTACK=real needs Debian's dataset-fashion-mnist or openclipart-png "
                                 "(apt-get install dataset-fashion-mnist openclipart-png)")
    return np.vstack(vectors), entries


def validation(backbone: Backbone, data_dir: str | Path, n: int = 1_900, queries: int = 100,
               progress: bool = False) -> tuple[dict, str]:
    """The check of the distractors for notebook 03_flat_index: benchmarks/bench_haystack.py's figures when
    it has been run with this backbone (BENCH_RESULTS), else the same comparison measured now on
    `n` Fashion-MNIST images, IVF and HNSW only. Returns ({set: compare_haystacks' result}, where
    the figures come from); ({}, why) when neither can be had."""
    import json

    if BENCH_RESULTS.is_file():
        report = json.loads(BENCH_RESULTS.read_text(encoding="utf-8"))
        if report.get("backbone") == backbone.name and report.get("sets"):
            return report["sets"], (f"read from {BENCH_RESULTS.relative_to(REPO_ROOT)} (benchmarks/bench_haystack.py, "
                                    f"run {report['created']}, N = {report['n']:,} real images a set, "
                                    f"distractors fitted on {report['fit']})")
    try:
        fs, _, status = real_features("fashion_mnist", backbone, data_dir, n + queries, progress)
    except DatasetUnavailable as err:
        return {}, f"no real image set here ({err})"
    x = normalize(fs.vectors)[np.random.default_rng(0).permutation(len(fs))]
    figures = compare_haystacks(x[queries:queries + n], x[:queries], tails=("power_law", "none"), compressed=False)
    return {"fashion_mnist": figures}, (f"measured now on {n:,} Fashion-MNIST images and {queries} queries "
                                        f"(features: {status}); benchmarks/bench_haystack.py measures more")
