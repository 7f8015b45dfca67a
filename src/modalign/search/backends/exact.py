"""Exact search: one BLAS matrix product and a partial sort (the default; exact up to ~1M vectors)."""

from __future__ import annotations

import numpy as np

from modalign.search.backends.base import SearchBackend, as_queries
from modalign.search.backends.registry import BACKENDS

#: score-matrix budget per query chunk (floats): bounds memory of big batches against big corpora
CHUNK_FLOATS = 32_000_000


@BACKENDS.register("exact")
class ExactBackend(SearchBackend):
    name = "exact"

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._vectors = np.zeros((0, self.dim), np.float32)
        self._ids = np.zeros(0, np.int64)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(self._ids) == 0:
            self._vectors, self._ids = vectors, np.asarray(ids, np.int64).copy()
            return
        self._vectors = np.concatenate([self._vectors, vectors])
        self._ids = np.concatenate([self._ids, np.asarray(ids, np.int64)])

    def remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self._ids, np.asarray(ids, np.int64))
        self._vectors, self._ids = np.ascontiguousarray(self._vectors[keep]), self._ids[keep]

    def ids(self) -> np.ndarray:
        return self._ids.copy()

    def __len__(self) -> int:
        return len(self._ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_queries(queries, self.dim)
        n = len(self._ids)
        k = min(int(k), n)
        if k <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        scores_out = np.empty((len(q), k), np.float32)
        ids_out = np.empty((len(q), k), np.int64)
        step = max(1, CHUNK_FLOATS // max(n, 1))
        for start in range(0, len(q), step):
            scores = q[start : start + step] @ self._vectors.T
            if k < n:
                part = np.argpartition(scores, n - k, axis=1)[:, n - k :]
                top = np.take_along_axis(scores, part, axis=1)
            else:
                part, top = np.broadcast_to(np.arange(n), scores.shape), scores
            order = np.argsort(-top, axis=1, kind="stable")
            scores_out[start : start + step] = np.take_along_axis(top, order, axis=1)
            ids_out[start : start + step] = self._ids[np.take_along_axis(part, order, axis=1)]
        return scores_out, ids_out
