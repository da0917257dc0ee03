"""Distractors: synthetic database vectors that look like real image descriptors.

The trade-offs between index types only show on large databases (Flat's cost grows with N, IVF
and HNSW pay off from about 100,000 vectors), but a course sample has hundreds or thousands of
images. So the database is the real features plus distractors, made to resemble them:
1. same mean, and a covariance of full rank: a distractor is the real features' mean plus a
   random combination of d orthonormal directions. The first ones are the real features'
   principal directions; a few samples cannot tell the rest, so they are random directions
   orthogonal to those. Along each direction the variance follows the spectrum
   `fit_spectrum` estimates from the real features: with more samples than dimensions, the
   measured one; with fewer, a power law over all d directions whose sample spectrum, drawn
   from as many vectors as were measured, matches the measured one (a sample spectrum is
   squeezed into n - 1 directions and cannot be read off directly); the total variance is kept;
2. clustered, as images of one kind are: distractors come in groups whose centres are drawn
   from that same distribution (`within` sets the share of variance inside a group);
3. non-negative like pooled ReLU outputs (clipped at 0), and L2-normalised when the real ones are.
Queries and their ground truth stay real: distractors only make the haystack bigger, and a
distractor that comes up among a query's neighbours is one a real large collection could hold.
benchmarks/bench_haystack.py checks the model against databases of real features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .indexes import as_float32_matrix, as_ids

# database and query counts for each scale: full is where the trade-offs show; quick is the
# smallest database on which PQ with 8 bits gets its 39 * 256 = 9,984 training vectors
DATABASE_SIZE = {"quick": 10_000, "full": 100_000}
QUERY_COUNT = {"quick": 100, "full": 1_000}
DISTRACTOR_ID_START = 10**12   # distractor ids start here, far above any manifest id
TAILS = ("power_law", "none")   # how fit extends the spectrum past the measured directions
_CHUNK = 8_192   # rows generated at a time, to bound memory


@dataclass(frozen=True)
class Sizes:
    """How many vectors a run uses: real features, distractors, queries (drawn from the real ones)."""
    scale: str
    n_real: int
    n_distractors: int
    n_queries: int
    extra: str = "distractors"   # what fills the database beside the real features

    @property
    def n_database(self) -> int:
        return self.n_real + self.n_distractors

    def __str__(self) -> str:
        return (f"{self.scale}: database {self.n_database:,} = {self.n_real:,} real + "
                f"{self.n_distractors:,} {self.extra}; {self.n_queries:,} real queries")


def sample_spectrum(x) -> np.ndarray:
    """Variances along the principal directions of `x` (n, d), largest first: min(n - 1, d) values."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    s = np.linalg.svd(x, compute_uv=False)[: min(len(x) - 1, x.shape[1])]
    return s**2 / (len(x) - 1)


def power_law(alpha: float, d: int, total: float) -> np.ndarray:
    """Variances i^-alpha for i = 1..d, scaled to sum to `total`."""
    v = np.arange(1, d + 1, dtype=np.float64) ** -float(alpha)
    return v * (total / v.sum())


def _spectrum_misfit(alpha: float, measured: np.ndarray, n: int, d: int, seeds: int = 3) -> float:
    """Mean squared log-ratio between the measured sample spectrum and that of n Gaussian vectors
    drawn with a power-law spectrum (the directions do not matter to a spectrum: axis-aligned)."""
    stds = np.sqrt(power_law(alpha, d, measured.sum()))
    misfit = 0.0
    for seed in range(seeds):
        drawn = np.random.default_rng(seed).standard_normal((n, d)) * stds
        misfit += np.mean((np.log(sample_spectrum(drawn)[: len(measured)]) - np.log(measured)) ** 2)
    return misfit / seeds


def fit_spectrum(measured, n: int, d: int) -> tuple[np.ndarray, str]:
    """The variances along all d directions, from the sample spectrum `measured` of n vectors.

    With n - 1 >= d the measured spectrum is the estimate. With fewer vectors, the power law
    i^-alpha (total variance kept) whose sample spectrum, drawn from n vectors, is nearest the
    measured one, alpha found by golden-section search. Returns the variances and a description.
    """
    measured = np.asarray(measured, dtype=np.float64)
    if len(measured) >= d:
        return measured[:d].clip(0), f"measured on {n:,} vectors"
    keep = measured > measured[0] * 1e-12        # drop exact zeros (duplicated vectors)
    measured = measured[keep]
    lo, hi = 0.0, 3.0
    golden = (np.sqrt(5) - 1) / 2
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = _spectrum_misfit(a, measured, n, d), _spectrum_misfit(b, measured, n, d)
    while hi - lo > 0.01:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = _spectrum_misfit(a, measured, n, d)
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = _spectrum_misfit(b, measured, n, d)
    alpha = round((lo + hi) / 2, 3)
    return power_law(alpha, d, measured.sum()), f"power law i^-{alpha:.2f} fitted to {n:,} vectors"


def _complete_basis(rows: np.ndarray, d: int, seed: int) -> np.ndarray:
    """`rows` (r, d, orthonormal) followed by d - r random orthonormal rows orthogonal to them."""
    rng = np.random.default_rng(seed)
    extra = rng.standard_normal((d, d - len(rows)))
    extra -= rows.T @ (rows @ extra)             # out of the measured directions' span
    q, _ = np.linalg.qr(extra)
    return np.vstack([rows, q.T])


@dataclass(frozen=True)
class DistractorModel:
    """What distractors are drawn from: the statistics of a set of real features.

    mean: (d,); components: (r, d) orthonormal directions, the measured principal ones first;
    stds: (r,) standard deviation along each; normalized: whether the real features had unit
    norm (samples are then normalised too); spectrum: how the variances were estimated.
    """
    mean: np.ndarray
    components: np.ndarray
    stds: np.ndarray
    normalized: bool
    spectrum: str = ""

    @classmethod
    def fit(cls, real, tail: str = "power_law", seed: int = 0) -> "DistractorModel":
        """Fit to real features (n, d). tail: "power_law" (all d directions, see the module's
        docstring) or "none" (only the min(n - 1, d) measured directions: with n <= d every
        distractor then lies in the (n - 1)-dimensional span of the real features)."""
        if tail not in TAILS:
            raise ValueError(f"tail={tail!r}: use one of {', '.join(TAILS)}")
        x = as_float32_matrix(real, name="real features").astype(np.float64)
        n, d = x.shape
        if n < 2:
            raise ValueError("fitting distractors needs at least 2 real feature vectors")
        normalized = bool(np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-3))
        mean = x.mean(axis=0)
        x -= mean
        if n > d:   # eigenvectors of the d x d covariance: cheaper than an SVD of the n x d data
            variances, vectors = np.linalg.eigh(x.T @ x / (n - 1))
            measured, vt = variances[::-1].clip(0), vectors[:, ::-1].T
        else:
            _, s, vt = np.linalg.svd(x, full_matrices=False)
            measured = s**2 / (n - 1)
        r = min(n - 1, d)
        measured, vt = measured[:r], vt[:r]
        if tail == "none":
            return cls(mean.astype(np.float32), vt.astype(np.float32), np.sqrt(measured).astype(np.float32),
                       normalized, f"measured on {n:,} vectors, {r} directions")
        variances, how = fit_spectrum(measured, n, d)
        basis = vt if r == d else _complete_basis(vt, d, seed)
        return cls(mean.astype(np.float32), basis.astype(np.float32), np.sqrt(variances).astype(np.float32),
                   normalized, how)

    @property
    def d(self) -> int:
        return self.mean.shape[0]

    @property
    def rank(self) -> int:
        """Directions with variance: the rank of the distractors' covariance (before clipping)."""
        return int(np.count_nonzero(self.stds > 0))

    def sample(self, n: int, seed: int = 0, *, n_clusters: int | None = None, within: float = 0.6,
               normalize: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`n` distractors (float32, (n, d)) and the group each belongs to ((n,) int64).

        n_clusters: number of groups (default about sqrt(n)); within: share of each direction's
        variance inside a group (1.0: no groups), which sets how hard search is (see
        benchmarks/bench_haystack.py). normalize: L2-normalise (default: as the real features
        were). The same seed gives the same vectors.
        """
        if not 0.0 <= within <= 1.0:
            raise ValueError(f"within={within}: a share of variance, between 0 and 1")
        rng = np.random.default_rng(seed)
        n_clusters = n_clusters or max(1, round(np.sqrt(n)))
        between = (self.stds * np.sqrt(1 - within)).astype(np.float32)   # float32 all the way: a float64
        inside = (self.stds * np.sqrt(within)).astype(np.float32)        # scalar would make every product float64
        centres = rng.standard_normal((n_clusters, len(self.stds)), dtype=np.float32) * between
        groups = rng.integers(n_clusters, size=n)
        out = np.empty((n, self.d), dtype=np.float32)
        for start in range(0, n, _CHUNK):
            g = groups[start:start + _CHUNK]
            coef = centres[g] + rng.standard_normal((len(g), len(self.stds)), dtype=np.float32) * inside
            block = self.mean + coef @ self.components
            np.maximum(block, 0.0, out=block)           # pooled ReLU outputs are never negative
            if self.normalized if normalize is None else normalize:
                block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
            out[start:start + len(g)] = block
        return out, groups.astype(np.int64)


def make_distractors(real, n: int, seed: int = 0, **options) -> np.ndarray:
    """`n` distractors matched to `real` (see the module's docstring); options go to `DistractorModel.sample`."""
    return DistractorModel.fit(real).sample(n, seed, **options)[0]


def with_distractors(real, real_ids, n: int, seed: int = 0, **options) -> tuple[np.ndarray, np.ndarray]:
    """The database: `real` features then `n` distractors matched to them, and their ids.

    Distractor ids run from DISTRACTOR_ID_START, so `ids >= DISTRACTOR_ID_START` marks them
    and a manifest has no path for them.
    """
    real = as_float32_matrix(real, name="real features")
    fake = make_distractors(real, n, seed, **options) if n else real[:0]
    ids = np.concatenate([as_ids(real_ids, len(real)), DISTRACTOR_ID_START + np.arange(n, dtype=np.int64)])
    return np.vstack([real, fake]), ids


def synthetic_features(n: int, d: int = 2048, n_classes: int = 20, seed: int = 0,
                       within: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in for real pooled CNN features, for tests and benchmarks: (n, d) float32 and labels.

    Non-negative, clustered into `n_classes` labelled classes, with a slowly decaying spectrum
    (variance along the i-th of d random directions falls as 1/i, so 256 of 2048 directions carry
    about three quarters of it) and a mean of 0.5 per dimension on average.
    """
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    stds = np.sqrt(power_law(1.0, d, 0.25 * d))   # total variance 0.25 per dimension
    model = DistractorModel(rng.exponential(0.5, d).astype(np.float32), basis.T.astype(np.float32),
                            stds.astype(np.float32), False, "power law i^-1")
    return model.sample(n, seed, n_clusters=n_classes, within=within)
