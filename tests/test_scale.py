"""Past one machine (notebook 11_scaling_out): Ray Data extraction, Parquet shards, Faiss on-disk merge, Milvus Lite."""

from __future__ import annotations

import dataclasses
import hashlib

import faiss
import numpy as np
import pytest
from faiss.contrib.ondisk import merge_ondisk

from helpers.__main__ import main
from helpers.backbones import load_backbone
from helpers.features import FeatureError, extract
from helpers.manifest import Manifest, scan
from tests.conftest import write_photo


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for the module (2 CPUs); a reported skip if this machine cannot start it."""
    ray = pytest.importorskip("ray")
    from helpers.scale_ray import RayStartError, start_ray

    try:
        start_ray(num_cpus=2)
    except RayStartError as err:
        pytest.skip(str(err))
    yield ray
    ray.shutdown()


@pytest.fixture
def manifest_with_failures(tmp_path):
    """Seven small photos; one truncated (listed with its hash), one changed after the scan."""
    root = tmp_path / "photos"
    for i in range(7):
        write_photo(root / f"p{i}.jpg", i, size=(96, 72))
    manifest = scan(root, progress=False).manifest
    entries = list(manifest)
    data = manifest.abspath(entries[2]).read_bytes()[:150]
    manifest.abspath(entries[2]).write_bytes(data)
    entries[2] = dataclasses.replace(entries[2], sha256=hashlib.sha256(data).hexdigest())
    manifest.abspath(entries[5]).write_bytes(b"replaced after the scan")
    return Manifest(root, entries)


def test_ray_pipeline_matches_extract_and_records_failures(ray_local, manifest_with_failures, tmp_path):
    from helpers.scale_ray import extract_ray, load_shards

    lite0 = load_backbone("efficientnet_lite0", verbose=False)
    local = extract(manifest_with_failures, lite0, batch_size=4, progress=False)
    out = extract_ray(manifest_with_failures, lite0, tmp_path / "shards", ray_batch=3, batch_size=2, threads=1)
    shards = sorted(out.glob("*.parquet"))
    fs = load_shards(out)
    assert len(shards) >= 2, "several actor batches give several shards"
    assert np.array_equal(fs.ids, local.ids) and fs.vectors.dtype == np.float32 and fs.vectors.flags.c_contiguous
    cos = (fs.vectors * local.vectors).sum(1) / np.linalg.norm(fs.vectors, axis=1) / np.linalg.norm(local.vectors, axis=1)
    assert cos.min() >= 0.9999, cos.min()
    assert sorted(fs.failures) == sorted(local.failures) and len(fs.failures) == 2
    assert fs.meta["manifest_hash"] == manifest_with_failures.content_hash() and fs.meta["engine"].startswith("ray")
    assert not list(tmp_path.glob(".shards*")), "no temporary folder left behind"


def test_the_actor_turns_a_batch_into_rows_with_failures(manifest_with_failures, tmp_path):
    """Embedder's work without Ray: a numpy batch of manifest rows in, (row, id, path, vector, error) out."""
    import pyarrow.parquet as pq

    from helpers.scale_ray import Embedder, load_shards

    lite0 = load_backbone("efficientnet_lite0", verbose=False)
    local = extract(manifest_with_failures, lite0, batch_size=4, progress=False)
    entries = list(manifest_with_failures)
    batch = {"row": np.arange(len(entries)), "id": np.array([e.id for e in entries]),
             "path": np.array([e.path for e in entries], dtype=object),
             "sha256": np.array([e.sha256 for e in entries], dtype=object)}
    table = Embedder(str(manifest_with_failures.root), lite0, 1, {"batch_size": 4})(batch)
    assert table.column_names == ["row", "id", "path", "vector", "error"] and table.num_rows == 7
    assert table.column("vector").null_count == 2 == len([e for e in table.column("error").to_pylist() if e])
    pq.write_table(table.slice(4), tmp_path / "b.parquet")   # two shards, out of manifest order
    pq.write_table(table.slice(0, 4), tmp_path / "a.parquet")
    fs = load_shards(tmp_path)
    assert np.array_equal(fs.ids, local.ids) and sorted(fs.failures) == sorted(local.failures)
    np.testing.assert_allclose(fs.vectors, local.vectors, rtol=1e-4, atol=1e-5)


def test_cli_features_with_the_ray_engine(ray_local, manifest_with_failures, tmp_path, capsys):
    csv_path = manifest_with_failures.save(tmp_path / "manifest.csv")
    out = tmp_path / "ray_features"
    assert main(["features", str(csv_path), "--out", str(out), "--engine", "ray", "--backbone",
                 "efficientnet_lite0", "--quiet", "--normalize"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 5 vectors as Parquet shards" in printed and "2 images failed" in printed
    assert (out / "features.json").is_file()


def test_parquet_shards_round_trip(tmp_path):
    from helpers.scale_ray import load_shards, read_shard, write_shards

    rng = np.random.default_rng(0)
    x, ids = rng.random((250, 16), dtype=np.float32), rng.choice(10**9, 250, replace=False)
    files = write_shards(ids, x, tmp_path / "db", rows_per_shard=100)
    assert [f.name for f in files] == ["shard_00000.parquet", "shard_00001.parquet", "shard_00002.parquet"]
    back = load_shards(tmp_path / "db")
    assert np.array_equal(back.ids, ids) and np.array_equal(back.vectors, x) and back.ids.dtype == np.int64
    part_ids, part = read_shard(files[2])
    assert np.array_equal(part_ids, ids[200:]) and np.array_equal(part, x[200:])
    with pytest.raises(FeatureError, match="no Parquet shards"):
        load_shards(tmp_path / "empty")


def test_on_disk_merge_equals_in_memory(tmp_path, faiss_one_thread):
    rng = np.random.default_rng(1)
    d, n = 32, 4000
    x = rng.standard_normal((n, d)).astype(np.float32)
    faiss.normalize_L2(x)
    ids = np.arange(n, dtype=np.int64) * 7 + 3
    trained = faiss.index_factory(d, "IVF32,Flat", faiss.METRIC_INNER_PRODUCT)
    trained.train(x[:2000])
    faiss.write_index(trained, str(tmp_path / "trained.index"))
    blocks = []
    for b, part in enumerate(np.array_split(np.arange(n), 3)):
        block = faiss.read_index(str(tmp_path / "trained.index"))
        block.add_with_ids(x[part], ids[part])
        faiss.write_index(block, str(tmp_path / f"block{b}.index"))
        blocks.append(block)
    merged = faiss.read_index(str(tmp_path / "trained.index"))
    merge_ondisk(merged, [str(tmp_path / f"block{b}.index") for b in range(3)], str(tmp_path / "merged.ivfdata"))
    faiss.write_index(merged, str(tmp_path / "merged.index"))
    ondisk = faiss.read_index(str(tmp_path / "merged.index"), faiss.IO_FLAG_ONDISK_SAME_DIR)
    memory = faiss.read_index(str(tmp_path / "trained.index"))
    memory.add_with_ids(x, ids)
    shards = faiss.IndexShards(d, False, False)
    for block in blocks:
        shards.add_shard(block)
    q = x[::97]
    for index in (ondisk, memory, *blocks):
        index.nprobe = 4
    expected = memory.search(q, 10)
    assert ondisk.ntotal == n and shards.ntotal == n
    assert np.array_equal(ondisk.search(q, 10)[1], expected[1])
    assert np.array_equal(shards.search(q, 10)[1], expected[1])
    assert not np.array_equal(blocks[0].search(q, 10)[1], expected[1]), "one block alone is not the whole"


def test_milvus_lite_round_trip(tmp_path):
    pytest.importorskip("pymilvus")
    from helpers.scale_milvus import connect, create_collection, create_index, insert, search

    rng = np.random.default_rng(2)
    x = rng.standard_normal((600, 16)).astype(np.float32)
    faiss.normalize_L2(x)
    ids = np.arange(600, dtype=np.int64) * 5 + 11
    client = connect(tmp_path / "sub" / "milvus.db")
    try:
        create_collection(client, "images", 16)
        assert insert(client, "images", ids, x, [f"img/{i}.jpg" for i in ids], batch=250) == 600
        create_index(client, "images", "IVF_FLAT", {"nlist": 8})
        assert client.describe_index("images", "vector")["index_type"] == "IVF_FLAT"
        scores, found = search(client, "images", x[:20], 5, {"nprobe": 8})
        exact = faiss.IndexFlatIP(16)
        exact.add(x)
        truth_scores, truth = exact.search(x[:20], 5)
        assert np.array_equal(found, ids[truth]) and np.allclose(scores, truth_scores, atol=1e-5)
        assert client.get("images", ids=[int(ids[3])], output_fields=["path"])[0]["path"] == f"img/{ids[3]}.jpg"
        client.delete("images", ids=[int(i) for i in ids[:10]])
        _, after = search(client, "images", x[:10], 5, {"nprobe": 8})
        assert not np.isin(after, ids[:10]).any() and (after >= 0).all()
    finally:
        client.close()


def test_cli_milvus_index(tmp_path, capsys):
    pytest.importorskip("pymilvus")
    from helpers.features import FeatureSet, save_features

    rng = np.random.default_rng(3)
    fs = FeatureSet(rng.random((300, 8), dtype=np.float32), np.arange(300, dtype=np.int64),
                    meta={"dim": 8})
    save_features(fs, tmp_path / "f.npy")
    uri = tmp_path / "m.db"
    assert main(["milvus-index", str(tmp_path / "f.npy"), "--uri", str(uri), "--index-type", "HNSW",
                 "--params", '{"M": 8, "efConstruction": 40}']) == 0
    assert "inserted 300 normalised vectors" in capsys.readouterr().out
    assert main(["milvus-index", str(tmp_path / "f.npy"), "--uri", str(uri), "--params", "{nlist"]) == 2
    assert main(["milvus-index", str(tmp_path / "f.npy"), "--uri", "http://127.0.0.1:9"]) == 1
    assert "error: milvus at http://127.0.0.1:9" in capsys.readouterr().err


HIDE_SCALE_EXTRA = '''
import sys


class _HideScaleExtra:
    """As if the scale extra (Ray, Milvus) were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "pymilvus", "milvus_lite"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _HideScaleExtra())
'''


def test_notebook_11_runs_its_faiss_part_without_the_scale_extra(tmp_path, monkeypatch):
    """The core install (requirements.txt) has no Ray and no Milvus: notebook 11_scaling_out then says so in one
    line a step and runs everything else, its checks included."""
    import json

    from helpers.runner import REPO_ROOT, execute

    (tmp_path / "hide").mkdir()
    (tmp_path / "hide" / "sitecustomize.py").write_text(HIDE_SCALE_EXTRA)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "hide"))
    monkeypatch.setenv("SIMSEARCH_DATA_DIR", str(tmp_path / "data"))   # not the notebooks' caches, which run beside
    monkeypatch.setenv("SIMSEARCH_SCALE", "quick")
    run = execute(REPO_ROOT / "notebooks" / "11_scaling_out.ipynb", tmp_path / "out", tmp_path / "report.jsonl")
    assert run.error is None, run.error
    cells = json.loads((tmp_path / "out" / "11_scaling_out.ipynb").read_text())["cells"]
    printed = "".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code" for o in c["outputs"])
    assert "ray not installed" in printed and "milvus-lite not installed" in printed
    assert printed.count("skipped: Ray Data") >= 1 and printed.count("skipped: Milvus Lite") == 6
    assert "all checks passed" in printed
