import numpy as np
import pytest

from helpers.distractors import DISTRACTOR_ID_START
from helpers.database import CourseDatabase
from helpers.evaluate import recall_at_k
from helpers.presentation import Comparison
from helpers.features import FeatureSet
from helpers.manifest import Entry, Manifest
from helpers.settings import SettingsError


@pytest.fixture
def small(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 40, 32
    entries = [Entry(i, f"l{i // 10}/{i}.jpg", "0" * 64, 1, 1, 1, "JPEG", f"l{i // 10}") for i in range(n)]
    manifest = Manifest(tmp_path, entries)
    fs = FeatureSet(np.abs(rng.standard_normal((n, d))).astype(np.float32), np.arange(n, dtype=np.int64))
    return fs, manifest


def test_queries_are_held_out_and_distractors_fill_the_database(small, monkeypatch):
    import helpers.distractors as dist
    monkeypatch.setitem(dist.DATABASE_SIZE, "quick", 500)
    fs, manifest = small
    db = CourseDatabase(fs, manifest, "quick")
    assert len(db.xb) == 500 == len(db.ids) == db.sizes.n_database
    assert db.sizes.n_queries == 20 and len(db.queries) == 20
    assert not set(db.query_ids) & set(db.ids), "a query must not be in the database"
    real = db.ids[db.ids < DISTRACTOR_ID_START]
    assert sorted(set(real) | set(db.query_ids)) == list(range(40))
    assert (db.ids[20:] >= DISTRACTOR_ID_START).all()
    assert db.xb.dtype == np.float32 and db.xb.flags["C_CONTIGUOUS"] and (db.xb >= 0).all()
    # the course's metric is cosine: every vector (distractors too) has unit length
    np.testing.assert_allclose(np.linalg.norm(db.xb, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(db.queries, axis=1), 1, rtol=1e-5)
    truth = db.ground_truth(10)
    assert truth is db.ground_truth(10) and truth.ids.shape == (20, 10) and truth.metric == "cosine"
    brute = db.ids[np.argsort(-(db.queries @ db.xb.T), axis=1)[:, :10]]
    assert recall_at_k(truth, brute, 10) == 1.0


def test_tuning_and_test_queries_split_the_queries_at_random(small, monkeypatch):
    import helpers.distractors as dist
    monkeypatch.setitem(dist.DATABASE_SIZE, "quick", 500)
    db = CourseDatabase(*small, "quick")
    tune, test = db.tune_queries, db.test_queries
    assert len(tune) == len(test) == 10
    rows = {q.tobytes(): i for i, q in enumerate(db.queries)}
    tune_rows, test_rows = [rows[q.tobytes()] for q in tune], [rows[q.tobytes()] for q in test]
    assert sorted(tune_rows + test_rows) == list(range(20))
    assert tune_rows != list(range(10)), "a random half, not the first one"
    truth = db.ground_truth(10, "test")
    assert np.array_equal(truth.ids, db.ground_truth(10).ids[test_rows])
    with pytest.raises(ValueError, match="part 'train'"):
        db.ground_truth(10, "train")


def test_unknown_scale_is_refused(small):
    with pytest.raises(SettingsError):
        CourseDatabase(*small, "huge")


def test_comparison_keeps_rows_per_notebook(tmp_path):
    c = Comparison(tmp_path / "c.json")
    c.update("03", [{"index": "Flat", "recall@10": 1.0, "QPS": 10.0, "extra": 1}])
    c.update("04", [{"index": "IVF", "recall@10": 0.9}])
    c.update("03", [{"index": "Flat", "recall@10": 1.0, "QPS": 20.0, "QPS 1-by-1": 2.0}])
    table = c.table()
    assert table.column("index") == ["Flat", "IVF"] and table.column("QPS") == [20.0, None]
    assert table.column("QPS 1-by-1") == [2.0, None]
    assert table.column("notebook") == ["03", "04"] and "extra" not in table.columns
    (tmp_path / "c.json").write_text("{broken")
    assert len(Comparison(tmp_path / "c.json").table()) == 0
