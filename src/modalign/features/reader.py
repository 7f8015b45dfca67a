"""Read cached features without loading them: memory-mapped shards behind a lazy (n_rows, d) matrix.

Training streams mini-batches from a ``CachedMatrix``: only the rows of the batch are read (through
the page cache), so a feature matrix larger than RAM trains as fast as the disk serves its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modalign.encoders.base import Encoder
from modalign.features.cache import EncoderStore, FeatureCache
from modalign.features.keys import item_key
from modalign.features.tensor_map import map_tensor  # noqa: F401  (still importable from here)


class CachedMatrix:
    """(n_rows, dim) float32 whose rows live in memory-mapped shards; rows without features read as zeros.

    Indexing with a slice, an index array or a boolean mask gives another lazy matrix (nothing is
    read); ``take(rows)`` reads those rows into a fresh array; ``np.asarray`` reads every row.
    """

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, parts: Sequence[np.ndarray], part: np.ndarray, row: np.ndarray, dim: int) -> None:
        self._parts = list(parts)
        self._part = np.asarray(part, np.int32)  # which part holds each row; -1 = no features
        self._row = np.asarray(row, np.int64)  # the row inside that part
        self.dim = int(dim)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self._part), self.dim)

    def __len__(self) -> int:
        return len(self._part)

    @property
    def parts(self) -> list[np.ndarray]:
        return self._parts

    def __getitem__(self, idx: Any) -> Any:
        if isinstance(idx, (int, np.integer)):
            return self.take(np.array([idx]))[0]
        return CachedMatrix(self._parts, self._part[idx], self._row[idx], self.dim)

    def take(self, rows: Any, axis: int = 0) -> np.ndarray:
        """Rows ``rows`` (indices or a boolean mask) as an in-memory (len(rows), dim) array."""
        if axis != 0:
            raise ValueError("CachedMatrix.take reads rows (axis=0) only")
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        part, src = self._part[rows], self._row[rows]
        out = np.zeros((len(rows), self.dim), np.float32)
        for k in np.unique(part):
            if k < 0:
                continue
            sel = np.flatnonzero(part == k)
            out[sel] = self._parts[k][src[sel]]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.take(np.arange(len(self)))
        return arr if dtype is None else arr.astype(dtype)

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled as file/offset/shape (DDP workers re-map the shards) instead of numpy copying the data
        specs = [(str(p.filename), int(p.offset), tuple(p.shape)) if isinstance(p, np.memmap)
                 else np.asarray(p) for p in self._parts]
        return (_rebuild, (specs, self._part, self._row, self.dim))


def _rebuild(specs: list[Any], part: np.ndarray, row: np.ndarray, dim: int) -> CachedMatrix:
    parts = [np.memmap(s[0], dtype="<f4", mode="r", offset=s[1], shape=s[2]) if isinstance(s, tuple) else s
             for s in specs]
    return CachedMatrix(parts, part, row, dim)


def open_matrix(cache: FeatureCache, encoder: Encoder, items: Sequence[Any], layer: str) -> tuple[CachedMatrix,
                                                                                                    np.ndarray]:
    """``layer`` features of ``items`` straight from the cache's shards, plus the mask of rows found.

    Items that are None or not cached (run ``extract`` first) get zero rows and False in the mask.
    """
    keys: list[bytes | None] = []
    for item in items:
        try:
            keys.append(None if item is None else item_key(item))
        except (TypeError, OSError):
            keys.append(None)
    store = cache.store(encoder.cache_id, encoder.layer_dims)
    return matrix_for_keys(store, keys, layer)


def matrix_for_keys(store: EncoderStore, keys: Sequence[bytes | None], layer: str) -> tuple[CachedMatrix, np.ndarray]:
    """A lazy (len(keys), dim) matrix of ``layer`` over cached ``keys`` (None or not cached: a zero row),
    plus the mask of rows found. Raises ``CorruptShardError`` when a shard fails its checksum (it is
    dropped from the cache, so extracting again recomputes its rows)."""
    names: dict[str, int] = {}
    part = np.full(len(keys), -1, np.int32)
    row = np.zeros(len(keys), np.int64)
    for i, key in enumerate(keys):
        where = None if key is None else store.locate(key)
        if where is None:
            continue
        part[i] = names.setdefault(where[0], len(names))
        row[i] = where[1]
    parts = []
    for name in names:
        arr = store.mapped(name, layer)
        if arr is None:
            raise CorruptShardError(f"feature cache shard {store.folder / name} is corrupt and was dropped; "
                                    "run the extraction again")
        parts.append(arr)
    return CachedMatrix(parts, part, row, store.layer_dims[layer]), part >= 0


class CorruptShardError(RuntimeError):
    """A cache shard failed its checksum while being opened (and was dropped)."""
