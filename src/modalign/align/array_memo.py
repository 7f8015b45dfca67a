"""A small least-recently-used memo keyed by the contents of numpy arrays.

The closed forms refit on the same rows many times inside auto's validation grid, and each refit would
otherwise redo the same D × D decompositions. Arrays are not hashable, so ``functools.lru_cache`` cannot key
them; this keys them by a digest of their bytes, shape and dtype.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Generic, TypeVar

import numpy as np

Value = TypeVar("Value")


def array_key(tag: str, *arrays: np.ndarray | None, extra: object = None) -> bytes:
    """A key that differs whenever the tag, any array's contents, shape or dtype, or ``extra`` differs."""
    h = hashlib.blake2b(tag.encode())
    for a in arrays:
        if a is None:
            h.update(b"\x00none")
            continue
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(repr(extra).encode())
    return h.digest()


class ArrayMemo(Generic[Value]):
    """Keeps the ``capacity`` most recently used values; a value larger than ``max_bytes`` is not kept.

    Callers must not modify what ``get`` returns: it is the stored object.
    """

    def __init__(self, capacity: int, max_bytes: int | None = None) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._items: OrderedDict[bytes, Value] = OrderedDict()

    def get(self, key: bytes) -> Value | None:
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
        return hit

    def put(self, key: bytes, value: Value, nbytes: int = 0) -> Value:
        if self.max_bytes is None or nbytes <= self.max_bytes:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: bytes) -> bool:
        return key in self._items

    def clear(self) -> None:
        self._items.clear()
