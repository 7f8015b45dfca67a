"""Registry of search backends (``exact``, ``hnsw``, ``ivf``)."""

from __future__ import annotations

from modalign._registry import Registry
from modalign.search.backends.base import SearchBackend

BACKENDS: Registry[SearchBackend] = Registry("search backend")
