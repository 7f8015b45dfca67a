"""Where an index keeps its vectors and its nearest-neighbour structure: the store contract.

An index folder always holds the catalog (the segment logs: entries, rows, deletions), the model and
the calibration statistics; a *store* holds the vectors, one search corpus per modality. ``local``
keeps them in the folder (safetensors segments, faiss files); ``lancedb`` and ``milvus`` keep them in
a vector database, one table / collection per modality, which then is their only copy.

A corpus is a :class:`SearchBackend` addressed by the index's global entry positions, so routing,
adaptive top-k and deletes work the same on every store.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modalign.search.backends.base import SearchBackend


def collection_name(prefix: str, modality: str) -> str:
    """A table / collection name both databases accept: letters, digits and underscores."""
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_]+', '_', modality)[:64]}"


class ExternalCorpus(SearchBackend):
    """One modality's vectors in a database; ``hide_from`` masks rows a crashed writer left uncommitted."""

    removes: ClassVar[bool] = True
    persistent: ClassVar[bool] = False

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.limit: int | None = None  # positions at or above this are not (yet) in the catalog

    def hide_from(self, limit: int | None) -> None:
        self.limit = limit

    @abstractmethod
    def fetch(self, ids: np.ndarray) -> np.ndarray:
        """The (len(ids), dim) float32 vectors of ``ids``, in that order."""

    def add_items(self, vectors: np.ndarray, ids: np.ndarray, meta: list[dict[str, Any]]) -> None:
        """Like ``add``, with each item's id, text and source stored beside it (readable by other tools)."""
        del meta
        self.add(vectors, ids)


class VectorStore(ABC):
    """An index's vectors: one corpus per modality. ``durable`` stores are the vectors' only copy."""

    kind: ClassVar[str]
    durable: ClassVar[bool] = True

    @abstractmethod
    def corpus(self, modality: str) -> SearchBackend:
        """The (new or existing) corpus of ``modality``."""

    def close(self) -> None:
        """Release connections (the index stays usable until then)."""
        return None


def resolve_location(folder: Path, uri: str | None, default: str) -> str:
    """A store location: ``uri`` as given (relative paths against the index folder), else inside it."""
    if uri is None:
        return str(folder / default)
    if "://" in uri:
        return uri
    path = Path(uri)
    return str(path if path.is_absolute() else folder / path)
