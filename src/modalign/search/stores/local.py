"""``local``: vectors in the index folder's safetensors segments, searched by an in-process backend."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from modalign.search.backends import BACKENDS, SearchBackend
from modalign.search.stores.base import VectorStore


class LocalStore(VectorStore):
    """Today's segment format: the folder holds the vectors; each corpus is an exact or faiss backend."""

    kind: ClassVar[str] = "local"
    durable: ClassVar[bool] = False

    def __init__(self, dim: int, backend: str = "exact", backend_params: Mapping[str, Any] | None = None) -> None:
        BACKENDS.get(backend)  # a clear error for an unknown name
        self.dim = int(dim)
        self.backend = backend
        self.backend_params = dict(backend_params or {})

    def corpus(self, modality: str) -> SearchBackend:
        del modality  # every corpus of a local index uses the same backend
        return BACKENDS.create(self.backend, dim=self.dim, **self.backend_params)
