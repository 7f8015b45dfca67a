"""faiss HNSW graph (``--ann hnsw``): fast, high recall, no training; deletions are filtered at query time."""

from __future__ import annotations

from typing import Any

import numpy as np

from modalign.search.backends.base import as_queries
from modalign.search.backends.faiss_base import FaissBackend, _faiss
from modalign.search.backends.registry import BACKENDS


@BACKENDS.register("hnsw")
class HNSWBackend(FaissBackend):
    name = "hnsw"
    # faiss HNSW cannot drop nodes: the index over-fetches and filters deleted ids until a compaction
    removes = False

    def __init__(self, dim: int, m: int = 32, ef_construction: int = 80, ef_search: int = 64) -> None:
        super().__init__(dim)
        self.m = int(m)
        self.ef_construction = int(ef_construction)
        self.ef_search = int(ef_search)

    def config(self) -> dict[str, Any]:
        return {"m": self.m, "ef_construction": self.ef_construction, "ef_search": self.ef_search}

    def _new_index(self, first_batch: np.ndarray) -> Any:
        faiss = _faiss()
        graph = faiss.IndexHNSWFlat(self.dim, self.m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = self.ef_construction
        return faiss.IndexIDMap2(graph)

    def _apply_search_params(self) -> None:
        # search the graph itself and map labels with numpy: IndexIDMap2.search maps them in an OpenMP
        # loop, whose thread start-up costs more than the whole search of one query on a busy machine
        self._graph = _faiss().downcast_index(self._index.index)
        self._graph.hnsw.efSearch = self.ef_search
        self._set_labels()

    def _set_labels(self) -> None:
        self._labels = self.ids()
        self._identity = bool(np.array_equal(self._labels, np.arange(len(self._labels))))

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        super().add(vectors, ids)
        self._set_labels()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_queries(queries, self.dim)
        k = min(int(k), len(self))
        if k <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        scores, rows = self._graph.search(q, k)
        if self._identity:
            return scores, rows
        return scores, np.where(rows >= 0, self._labels[np.maximum(rows, 0)], -1)

    def ids(self) -> np.ndarray:
        if self._index is None:
            return np.zeros(0, np.int64)
        return _faiss().vector_to_array(self._index.id_map).astype(np.int64)

    def remove(self, ids: np.ndarray) -> None:
        """HNSW keeps deleted nodes (see ``removes``)."""
