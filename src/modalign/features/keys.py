"""Content keys: the cache is addressed by what an item *is*, not where it sits in a manifest."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

KEY_BYTES = 16


def item_key(item: Any) -> bytes:
    """16-byte BLAKE2b of the item's content (file bytes for paths, UTF-8 for text, raw floats for vectors)."""
    h = hashlib.blake2b(digest_size=KEY_BYTES)
    if isinstance(item, str):
        h.update(b"text\x00")
        h.update(item.encode("utf-8"))
    elif isinstance(item, Path):
        h.update(b"file\x00")
        with item.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    elif isinstance(item, np.ndarray):
        h.update(b"vec\x00")
        h.update(np.ascontiguousarray(item, dtype=np.float32).tobytes())
    elif isinstance(item, (list, tuple)):
        h.update(b"vec\x00")
        h.update(np.asarray(item, dtype=np.float32).tobytes())
    else:
        raise TypeError(f"cannot key an item of type {type(item).__name__}")
    return h.digest()
