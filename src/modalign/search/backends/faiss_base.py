"""Shared plumbing of the faiss backends: ids, search, crash-safe save and load.

``faiss.write_index`` files are faiss's own binary layout (no code is executed when reading them).
Saving goes through ``modalign._io.atomic_write_with`` (temp file, fsync, rename), so a crash leaves
the previous file intact.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from modalign._io import atomic_write_with
from modalign.search.backends.base import SearchBackend, as_queries


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError("approximate search needs faiss: pip install faiss-cpu") from exc
    return faiss


class FaissBackend(SearchBackend):
    persistent = True

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._index: Any = None

    @abstractmethod
    def _new_index(self, first_batch: np.ndarray) -> Any:
        """A fresh faiss index (trained on ``first_batch`` when it needs training)."""

    def _apply_search_params(self) -> None:
        """Push search-time parameters (efSearch, nprobe) into the faiss index."""

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(vectors) == 0:
            return
        if self._index is None:
            self._index = self._new_index(vectors)
            self._apply_search_params()
        self._index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_queries(queries, self.dim)
        k = min(int(k), len(self))
        if k <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        return self._index.search(q, k)

    def save(self, path: Path) -> None:
        atomic_write_with(path, lambda tmp: _faiss().write_index(self._index, str(tmp)))

    def load(self, path: Path) -> None:
        index = _faiss().read_index(str(path))
        if index.d != self.dim:
            raise ValueError(f"{path}: faiss index has dimension {index.d}, expected {self.dim}")
        self._index = index
        self._apply_search_params()
