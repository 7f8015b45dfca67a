"""The vector-search backend contract: inner-product top-k over unit vectors, addressed by int64 ids.

A backend holds the vectors of one corpus (one modality of an index). Ids are the index's global
entry positions, so results need no translation table. Hyper-parameters go in ``__init__`` only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


class SearchBackend(ABC):
    name: ClassVar[str]
    #: True when ``remove`` really drops vectors; otherwise the index filters deleted ids itself
    removes: ClassVar[bool] = True
    #: True when the backend state is worth saving (an ANN graph); exact search rebuilds from vectors
    persistent: ClassVar[bool] = False
    #: > 1: the index fetches k·rerank candidates and re-scores them exactly (``search/rerank.py``);
    #: backends with approximate scores (PQ codes) set it from a hyper-parameter, exact-score ones keep 0
    rerank: int = 0

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments (besides ``dim``); JSON-serialisable."""
        return {}

    @abstractmethod
    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add (n, dim) float32 unit vectors with their int64 ids."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> None:
        """Forget ``ids`` (a no-op for backends with ``removes = False``)."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(q, dim) queries → (scores (q, k') float32, ids (q, k') int64), best first; k' = min(k, len)."""

    @abstractmethod
    def ids(self) -> np.ndarray:
        """Every id held (int64), in no particular order."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of vectors held (including removed ones when ``removes`` is False)."""

    def save(self, path: Path) -> None:  # pragma: no cover - only persistent backends are saved
        raise NotImplementedError(f"backend {self.name!r} is rebuilt from vectors, not saved")

    def load(self, path: Path) -> None:  # pragma: no cover - only persistent backends are loaded
        raise NotImplementedError(f"backend {self.name!r} is rebuilt from vectors, not loaded")


def as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    if (isinstance(queries, np.ndarray) and queries.dtype == np.float32 and queries.ndim == 2
            and queries.shape[1] == dim and queries.flags.c_contiguous):
        return queries  # the usual case, checked cheaply: this runs once per query
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape (n, {dim}), got {np.shape(queries)}")
    return q
