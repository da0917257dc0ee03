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
    model = ds.DistractorModel.fit(x)      # more vectors than dimensions: the measured spectrum
    assert np.allclose(model.mean, x.mean(0), atol=1e-5)
    along = np.var((x - x.mean(0)) @ model.components.T, axis=0, ddof=1)
    assert np.allclose(along, model.stds ** 2, rtol=1e-3)      # each std is the real spread along its direction
    assert np.all(np.diff(model.stds) <= 1e-6)                 # leading directions first
    total = ((x - x.mean(0)) ** 2).sum() / (len(x) - 1)
    assert (model.stds ** 2).sum() == pytest.approx(total, rel=1e-4)
    assert model.spectrum.startswith("measured")


def _far_from_zero(n, d, seed):
    """Features shifted away from 0, so that clipping at 0 never changes a sample."""
    x, _ = ds.synthetic_features(n, d, n_classes=6, seed=seed)
    return x + 10.0


def test_fit_on_fewer_vectors_than_dimensions_has_full_rank():
    x = _far_from_zero(40, 128, seed=8)
    model = ds.DistractorModel.fit(x)
    assert model.components.shape == (128, 128) and model.rank == 128
    assert np.allclose(model.components @ model.components.T, np.eye(128), atol=1e-4)   # orthonormal
    assert (model.stds ** 2).sum() == pytest.approx(ds.sample_spectrum(x).sum(), rel=1e-4)   # total variance kept
    centred = x - x.mean(0)
    measured = np.linalg.svd(centred, full_matrices=False)[2][:39]
    assert np.all(np.abs(np.sum(model.components[:39] * measured, axis=1)) > 0.999)   # measured directions first
    fake = model.sample(1000, seed=1, within=1.0)[0]
    assert fake.min() > 0                                       # nothing was clipped: the rank is the model's
    assert np.linalg.matrix_rank(np.cov(fake.T)) == 128
    outside = fake - fake.mean(0) - (fake - fake.mean(0)) @ measured.T @ measured
    assert (outside ** 2).sum() > 0.1 * ((fake - fake.mean(0)) ** 2).sum(), "variance off the real vectors' span"
    flat = ds.DistractorModel.fit(x, tail="none")               # the measured directions alone
    assert flat.rank == 39 and np.linalg.matrix_rank(np.cov(flat.sample(1000, seed=1, within=1.0)[0].T)) == 39
    with pytest.raises(ValueError, match="tail"):
        ds.DistractorModel.fit(x, tail="flat")


@pytest.mark.parametrize("alpha", [0.7, 1.3])
def test_power_law_fit_recovers_the_exponent_from_few_vectors(alpha):
    d, n = 512, 90
    drawn = np.random.default_rng(4).standard_normal((n, d)) * np.sqrt(ds.power_law(alpha, d, 1.0))
    variances, how = ds.fit_spectrum(ds.sample_spectrum(drawn), n, d)
    fitted = float(how.split("^-")[1].split()[0])
    assert abs(fitted - alpha) < 0.15, how
    assert len(variances) == d and variances.sum() == pytest.approx(ds.sample_spectrum(drawn).sum())


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
