"""Serving the course's vectors from Milvus (notebook 11_scaling_out): the plumbing around pymilvus.

`connect("data/.../milvus.db")` runs Milvus Lite embedded (no server to start);
`connect("http://host:19530")` talks to a Milvus server (docker-compose.yml starts one) with
the same calls. A collection holds (id INT64 primary key, path VARCHAR, vector FLOAT_VECTOR);
the course metric is cosine, so vectors are L2-normalised and searched with metric "IP".

What Milvus Lite 3.2 builds, observed by notebook 11_scaling_out: FLAT, IVF_FLAT, IVF_SQ8, HNSW and HNSW_SQ;
it refuses IVF_PQ ("reserved for a future phase"), HNSW_PQ, DISKANN and SCANN. Rows not yet
flushed into a segment are searched by brute force, whatever the index, so `insert` flushes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Rows per insert call (a gRPC message stays well under Milvus's 64 MB limit at d=2048).
INSERT_BATCH = 2_000
PATH_MAX = 1_024


def connect(uri: str | Path):
    """A MilvusClient: a local file path runs Milvus Lite embedded (its folder is created);
    an http(s):// URI connects to a Milvus server."""
    from pymilvus import MilvusClient

    uri = str(uri)
    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    return MilvusClient(uri)


def create_collection(client, name: str, dim: int) -> None:
    """A fresh collection `name` (an old one of that name is dropped) with the course's fields:
    id (INT64, primary, the manifest id), path (VARCHAR), vector (FLOAT_VECTOR of `dim`)."""
    from pymilvus import DataType

    if client.has_collection(name):
        client.drop_collection(name)
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("path", DataType.VARCHAR, max_length=PATH_MAX)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    client.create_collection(name, schema=schema)


def insert(client, name: str, ids, vectors, paths=None, batch: int = INSERT_BATCH) -> int:
    """Insert rows in batches and flush them into segments (so that an index covers them).
    `paths`: one string an id ("" when None). Returns the number of rows inserted."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    paths = [""] * len(vectors) if paths is None else list(paths)
    done = 0
    for s in range(0, len(vectors), batch):
        rows = [{"id": int(i), "path": p or "", "vector": v}
                for i, p, v in zip(ids[s:s + batch], paths[s:s + batch], vectors[s:s + batch])]
        done += client.insert(name, rows)["insert_count"]
    client.flush(name)
    return done


def create_index(client, name: str, index_type: str, params: dict, metric: str = "IP") -> None:
    """(Re)build the vector index of collection `name` and load it for search.

    The build parameters (nlist, M, efConstruction) travel as one JSON entry named "params":
    Milvus Lite 3.2.2 reads only that form and silently builds with its defaults (nlist 128)
    from the flat key-value pairs pymilvus 3.0.2 sends for `params={...}` (observed in notebook 11_scaling_out).
    """
    client.release_collection(name)
    for old in client.list_indexes(name):
        client.drop_index(name, old)
    index_params = client.prepare_index_params()
    index_params.add_index(field_name="vector", index_type=index_type, metric_type=metric,
                           params={"params": params})
    client.create_index(name, index_params)
    client.load_collection(name)


def search(client, name: str, queries, k: int, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each query in Faiss's order: (scores (nq, k) float32, ids (nq, k) int64),
    -inf / -1 where fewer than k were found. `params`: search parameters (nprobe, ef)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    hits = client.search(name, data=list(queries), limit=k, search_params={"params": params})
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    for row, found in enumerate(hits):
        ids[row, :len(found)] = [h["id"] for h in found]
        scores[row, :len(found)] = [h["distance"] for h in found]
    return scores, ids
