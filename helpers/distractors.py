"""Distractors: synthetic database vectors that look like real image descriptors.

The trade-offs between index types only show on large databases (Flat's cost grows with N, IVF
and HNSW pay off from about 100,000 vectors), but a course sample has hundreds or thousands of
images. So the database is the real features plus distractors, made to resemble them:
1. same mean and principal components: a distractor is the real features' mean plus a random
   combination of their principal directions, each with the variance the real features show
   along it, plus isotropic noise carrying the variance the kept directions leave out;
2. clustered, as images of one kind are: distractors come in groups whose centres are drawn
   from that same distribution (`within` sets the share of variance inside a group);
3. non-negative like pooled ReLU outputs (clipped at 0), and L2-normalised when the real ones are.
Queries and their ground truth stay real: distractors only make the haystack bigger, and a
distractor that comes up among a query's neighbours is one a real large collection could hold.
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
_CHUNK = 8_192   # rows generated at a time, to bound memory


@dataclass(frozen=True)
class Sizes:
    """How many vectors a run uses: real features, distractors, queries (drawn from the real ones)."""
    scale: str
    n_real: int
    n_distractors: int
    n_queries: int

    @property
    def n_database(self) -> int:
        return self.n_real + self.n_distractors

    def __str__(self) -> str:
        return (f"{self.scale}: database {self.n_database:,} = {self.n_real:,} real + "
                f"{self.n_distractors:,} distractors; {self.n_queries:,} real queries")


@dataclass(frozen=True)
class DistractorModel:
    """What distractors are drawn from: the statistics of a set of real features.

    mean: (d,); components: (r, d) orthonormal principal directions; stds: (r,) standard
    deviation along each; residual_std: per-dimension std of the variance they leave out;
    normalized: whether the real features had unit norm (samples are then normalised too).
    """
    mean: np.ndarray
    components: np.ndarray
    stds: np.ndarray
    residual_std: float
    normalized: bool

    @classmethod
    def fit(cls, real, n_components: int | None = None) -> "DistractorModel":
        """Fit to real features (n, d); keep `n_components` principal directions (default all, at most n-1)."""
        x = as_float32_matrix(real, name="real features").astype(np.float64)
        n, d = x.shape
        if n < 2:
            raise ValueError("fitting distractors needs at least 2 real feature vectors")
        r = min(n - 1, d) if n_components is None else min(int(n_components), n - 1, d)
        normalized = bool(np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-3))
        mean = x.mean(axis=0)
        x -= mean
        if n > d:   # eigenvectors of the d x d covariance: cheaper than an SVD of the n x d data
            variances, vectors = np.linalg.eigh(x.T @ x / (n - 1))
            variances, vt = variances[::-1].clip(0), vectors[:, ::-1].T
        else:
            _, s, vt = np.linalg.svd(x, full_matrices=False)
            variances = s**2 / (n - 1)
        residual = max(variances[r:].sum(), 0.0) / d
        return cls(mean.astype(np.float32), vt[:r].astype(np.float32), np.sqrt(variances[:r]).astype(np.float32),
                   float(np.sqrt(residual)), normalized)

    @property
    def d(self) -> int:
        return self.mean.shape[0]

    def sample(self, n: int, seed: int = 0, *, n_clusters: int | None = None, within: float = 0.6,
               normalize: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`n` distractors (float32, (n, d)) and the group each belongs to ((n,) int64).

        n_clusters: number of groups (default about sqrt(n)); within: share of each component's
        variance inside a group (1.0: no groups). It sets how hard search is; measured on 2048-d
        synthetic features with IVF at suggest_nlist: at 0.5 visiting 1 list finds 97% of the
        true top-10 (N = 100,000), at 0.8 visiting 64 lists finds 83% (N = 50,000); the default
        0.6 needs 4 lists for 96% (N = 100,000). normalize: L2-normalise (default: as the real
        features were). The same seed gives the same vectors.
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
            block += np.float32(self.residual_std) * rng.standard_normal(block.shape, dtype=np.float32)
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
    variances = 1.0 / np.arange(1, d + 1)
    stds = np.sqrt(variances * 0.25 * d / variances.sum())   # total variance 0.25 per dimension
    model = DistractorModel(rng.exponential(0.5, d).astype(np.float32), basis.T.astype(np.float32),
                            stds.astype(np.float32), 0.0, False)
    return model.sample(n, seed, n_clusters=n_classes, within=within)
