"""helpers.distractors: distractors that match the real features' statistics."""

import numpy as np
import pytest

from helpers import distractors as ds


@pytest.fixture(scope="module")
def real():
    return ds.synthetic_features(1500, 64, n_classes=12, seed=3)


def test_synthetic_features_are_non_negative_clustered_and_seeded(real):
    x, labels = real
    assert x.dtype == np.float32 and x.shape == (1500, 64) and x.min() == 0.0
    assert set(labels) == set(range(12))
    same = ds.synthetic_features(1500, 64, n_classes=12, seed=3)
    assert np.array_equal(same[0], x) and np.array_equal(same[1], labels)
    # a vector's nearest neighbour is mostly in its own class
    d2 = ((x[:200, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d2[:, :200], np.inf)
    assert np.mean(labels[d2.argmin(1)] == labels[:200]) > 0.8


def test_model_keeps_the_real_mean_and_principal_components(real):
    x, _ = real
    model = ds.DistractorModel.fit(x)
    assert np.allclose(model.mean, x.mean(0), atol=1e-5)
    along = np.var((x - x.mean(0)) @ model.components.T, axis=0, ddof=1)
    assert np.allclose(along, model.stds ** 2, rtol=1e-3)      # each std is the real spread along its direction
    assert np.all(np.diff(model.stds) <= 1e-6)                 # leading directions first
    total = ((x - x.mean(0)) ** 2).sum() / (len(x) - 1)
    assert (model.stds ** 2).sum() == pytest.approx(total, rel=1e-4) and model.residual_std < 1e-6
    few = ds.DistractorModel.fit(x, n_components=8)
    assert few.components.shape == (8, 64) and few.residual_std > 0


def test_distractors_resemble_the_real_features(real):
    x, _ = real
    model = ds.DistractorModel.fit(x)
    fake, groups = model.sample(3000, seed=7)
    assert fake.shape == (3000, 64) and fake.dtype == np.float32 and fake.min() >= 0.0
    assert len(np.unique(groups)) > 20
    cos = fake.mean(0) @ x.mean(0) / np.linalg.norm(fake.mean(0)) / np.linalg.norm(x.mean(0))
    assert cos > 0.98
    top = np.linalg.svd(fake - fake.mean(0), full_matrices=False)[2][0]
    assert abs(top @ model.components[0]) > 0.9       # same leading principal direction
    spread = np.linalg.norm(fake - fake.mean(0), axis=1).mean() / np.linalg.norm(x - x.mean(0), axis=1).mean()
    assert 0.7 < spread < 1.3


def test_distractors_are_seeded_and_follow_normalisation(real):
    x, _ = real
    model = ds.DistractorModel.fit(x)
    assert np.array_equal(model.sample(100, seed=1)[0], model.sample(100, seed=1)[0])
    assert not np.array_equal(model.sample(100, seed=1)[0], model.sample(100, seed=2)[0])
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    made = ds.make_distractors(unit, 200, seed=0)
    assert np.allclose(np.linalg.norm(made, axis=1), 1.0, atol=1e-5)
    raw = ds.make_distractors(unit, 200, seed=0, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    with pytest.raises(ValueError, match="within"):
        model.sample(10, within=1.5)


def test_database_with_distractors_keeps_real_ids_and_marks_the_rest(real):
    x, _ = real
    xb, ids = ds.with_distractors(x[:100], np.arange(100) * 2, 50, seed=4)
    assert xb.shape == (150, 64) and np.array_equal(xb[:100], x[:100])
    assert np.array_equal(ids[:100], np.arange(100) * 2)
    assert np.all(ids[100:] >= ds.DISTRACTOR_ID_START) and len(set(ids)) == 150
    again, _ = ds.with_distractors(x[:100], np.arange(100) * 2, 50, seed=4)
    assert np.array_equal(again, xb)
