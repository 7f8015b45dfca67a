"""Search backends, one file each; importing this package registers all of them."""

from modalign.search.backends import exact, hnsw, ivf, ivfpq  # noqa: F401
from modalign.search.backends.base import SearchBackend
from modalign.search.backends.registry import BACKENDS

__all__ = ["BACKENDS", "SearchBackend"]
