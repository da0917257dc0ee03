"""The course database that notebooks 03 onwards search: real features, distractors, held-out queries."""

from __future__ import annotations

import faiss
import numpy as np

from .evaluate import qps
from .indexes import SearchResult, blas_threshold, normalize, search


class CourseDatabase:
    """The database notebooks 03-11 search: real features plus distractors, real queries, all
    L2-normalised, because the course's metric is cosine similarity (notebook 03 measures why):
    search them with inner product (`faiss.IndexFlatIP`, `faiss.METRIC_INNER_PRODUCT`).

    Real images keep their manifest ids; distractors get ids from DISTRACTOR_ID_START upwards
    (helpers.distractors), which no manifest uses, and carry no label. Queries are real images (the first
    `sizes.n_queries` of every other image) held out of the database, so a query never finds
    itself; the other variants of its photo are in the database. Distractors are drawn to match the
normalised real features and are unit vectors too. The exact Flat index, its ground truth and its
    speed are computed once and reused by every measurement in a notebook.
    """

    def __init__(self, features, manifest, scale: str, seed: int = 0):
        from .distractors import DATABASE_SIZE, QUERY_COUNT, Sizes, with_distractors
        from .settings import SCALES, SettingsError

        if scale not in SCALES:
            raise SettingsError(f"scale {scale!r}: use one of {', '.join(SCALES)}")
        n = len(features)
        if n < 2:
            raise ValueError("the course database needs at least 2 real feature vectors")
        n_queries = min(QUERY_COUNT[scale], n // 2)
        # every other image is a query, held out of the database: its variants stay in it
        is_query = np.zeros(n, dtype=bool)
        is_query[1::2][:n_queries] = True
        vectors = normalize(features.vectors)
        real = vectors[~is_query][: DATABASE_SIZE[scale]]
        real_ids = features.ids[~is_query][: DATABASE_SIZE[scale]]
        self.sizes = Sizes(scale, len(real), max(0, DATABASE_SIZE[scale] - len(real)), n_queries)
        self.xb, self.ids = with_distractors(real, real_ids, self.sizes.n_distractors, seed)
        self.queries = np.ascontiguousarray(vectors[is_query])
        self.query_ids = features.ids[is_query]
        self.labels = {int(i): manifest.entry(i).label for i in features.ids}
        self._flat = None
        self._truth: dict[int, SearchResult] = {}
        self._flat_qps: dict[int, float] = {}

    metric = "cosine"

    def flat(self) -> faiss.Index:
        """The exact index over the whole database (built once): inner product on unit vectors."""
        if self._flat is None:
            self._flat = faiss.IndexIDMap(faiss.IndexFlatIP(self.xb.shape[1]))
            self._flat.add_with_ids(self.xb, self.ids)
        return self._flat

    def ground_truth(self, k: int = 10) -> SearchResult:
        """The exact top-k of every query (computed once per k)."""
        if k not in self._truth:
            self._truth[k] = search(self.flat(), self.queries, k)
        return self._truth[k]

    def flat_qps(self, k: int = 10) -> float:
        """Exact search's queries per second on these queries, measured once per k, on its
        BLAS path (`indexes.blas_threshold(0)`): the fastest exact search here, so that speed-ups
        are measured against Flat at its best, whatever the number of queries."""
        if k not in self._flat_qps:
            with blas_threshold(0):
                self._flat_qps[k] = qps(self.flat(), self.queries, k)
        return self._flat_qps[k]
