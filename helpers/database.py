"""The course database that notebooks 03_flat_index onwards search: real features, distractors, held-out queries."""

from __future__ import annotations

import faiss
import numpy as np

from .evaluate import qps
from .indexes import SearchResult, blas_threshold, normalize, search


class CourseDatabase:
    """The database notebooks 03_flat_index to 11_scaling_out search: real features plus a haystack, real queries, all
    L2-normalised, because the course's metric is cosine similarity (notebook 03_flat_index measures why):
    search them with inner product (`faiss.IndexFlatIP`, `faiss.METRIC_INNER_PRODUCT`).

    Real images keep their manifest ids; distractors get ids from DISTRACTOR_ID_START upwards
    (helpers.distractors), which no manifest uses, and carry no label. Queries are real images (the first
    `sizes.n_queries` of every other image) held out of the database, so a query never finds
    itself; the other variants of its photo are in the database. The queries are split at random into
    two halves (notebook 08_tuning writes the split out): settings are chosen on `tune_queries` and reported
    on `test_queries`, because a setting chosen on some queries flatters its recall on them. Distractors are drawn to match the
    normalised real features and are unit vectors too. The exact Flat index, its ground truth and its
    speed are computed once and reused by every measurement in a notebook.

    haystack: None for synthetic distractors, or (vectors, manifest entries) of real images
    (`helpers.haystack.real_haystack`, SIMSEARCH_HAYSTACK=real), which then take the distractors'
    place and ids; `manifest` is then the course's images and those, so that results show them.
    """

    def __init__(self, features, manifest, scale: str, seed: int = 0, haystack=None):
        from .distractors import DATABASE_SIZE, Sizes, with_distractors
        from .manifest import Manifest
        from .settings import SCALES, SettingsError

        if scale not in SCALES:
            raise SettingsError(f"scale {scale!r}: use one of {', '.join(SCALES)}")
        n = len(features)
        if n < 2:
            raise ValueError("the course database needs at least 2 real feature vectors")
        n_queries, n_extra = self.counts(n, scale)
        # every other image is a query, held out of the database: its variants stay in it
        is_query = np.zeros(n, dtype=bool)
        is_query[1::2][:n_queries] = True
        vectors = normalize(features.vectors)
        real = vectors[~is_query][: DATABASE_SIZE[scale]]
        real_ids = features.ids[~is_query][: DATABASE_SIZE[scale]]
        self.manifest = manifest
        if haystack is None:
            self.sizes = Sizes(scale, len(real), n_extra, n_queries)
            self.xb, self.ids = with_distractors(real, real_ids, n_extra, seed)
        else:
            extra, entries = haystack[0][:n_extra], haystack[1][:n_extra]
            self.sizes = Sizes(scale, len(real), len(extra), n_queries, "real haystack images")
            self.xb = np.vstack([real, extra])
            self.ids = np.concatenate([real_ids, np.array([e.id for e in entries], dtype=np.int64)])
            self.manifest = Manifest(manifest.root, list(manifest) + list(entries))
        self.queries = np.ascontiguousarray(vectors[is_query])
        self.query_ids = features.ids[is_query]
        order = np.random.default_rng(seed).permutation(len(self.queries))
        half = len(order) // 2
        self._parts = {"all": self.queries, "tune": self.queries[np.sort(order[:half])],
                       "test": self.queries[np.sort(order[half:])]}
        self.labels = {int(i): manifest.entry(i).label for i in features.ids}
        self._flat = None
        self._truth: dict[tuple[int, str], SearchResult] = {}
        self._flat_qps: dict[tuple[int, str], float] = {}

    metric = "cosine"

    @property
    def tune_queries(self) -> np.ndarray:
        """The half of the queries that chooses settings (nprobe, efSearch, ...)."""
        return self._parts["tune"]

    @property
    def test_queries(self) -> np.ndarray:
        """The other half, on which a chosen setting is reported."""
        return self._parts["test"]

    @staticmethod
    def counts(n: int, scale: str) -> tuple[int, int]:
        """For n real feature vectors: how many are queries, and how many haystack vectors fill the database."""
        from .distractors import DATABASE_SIZE, QUERY_COUNT

        n_queries = min(QUERY_COUNT[scale], n // 2)
        return n_queries, max(0, DATABASE_SIZE[scale] - (n - n_queries))

    @classmethod
    def from_settings(cls, settings, features, manifest, backbone, progress: bool = True) -> "CourseDatabase":
        """The database the settings ask for: SIMSEARCH_HAYSTACK=real fills it with real images
        (their features extracted once with `backbone`, then cached), else with distractors."""
        haystack = None
        if settings.haystack == "real":
            from .haystack import real_haystack
            n_extra = cls.counts(len(features), settings.scale)[1]
            haystack = real_haystack(backbone, settings.data_dir, n_extra, progress)
        return cls(features, manifest, settings.scale, haystack=haystack)

    def flat(self) -> faiss.Index:
        """The exact index over the whole database (built once): inner product on unit vectors."""
        if self._flat is None:
            self._flat = faiss.IndexIDMap(faiss.IndexFlatIP(self.xb.shape[1]))
            self._flat.add_with_ids(self.xb, self.ids)
        return self._flat

    def _part(self, part: str) -> np.ndarray:
        if part not in self._parts:
            raise ValueError(f"part {part!r}: use one of {', '.join(self._parts)}")
        return self._parts[part]

    def ground_truth(self, k: int = 10, part: str = "all") -> SearchResult:
        """The exact top-k of the queries ("all"), or of the "tune" or "test" half (computed once)."""
        if (k, part) not in self._truth:
            self._truth[k, part] = search(self.flat(), self._part(part), k)
        return self._truth[k, part]

    def flat_qps(self, k: int = 10, part: str = "all") -> float:
        """Exact search's queries per second on these queries, measured once per k and part, on its
        BLAS path (`indexes.blas_threshold(0)`): the fastest exact search here, so that speed-ups
        are measured against Flat at its best, whatever the number of queries."""
        if (k, part) not in self._flat_qps:
            with blas_threshold(0):
                self._flat_qps[k, part] = qps(self.flat(), self._part(part), k)
        return self._flat_qps[k, part]
