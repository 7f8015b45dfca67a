"""Thumbnails of indexed images: decoded with the decompression-bomb guard, cached in memory."""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Callable
from threading import Lock

from PIL import Image, features

from modalign.encoders.image_io import open_image

_FORMAT, _MIME = ("WEBP", "image/webp") if features.check("webp") else ("PNG", "image/png")


class ThumbnailCache:
    """LRU of encoded thumbnails by item id (they never change while the server runs)."""

    def __init__(self, size_px: int = 192, capacity: int = 4096) -> None:
        self.size_px = size_px
        self.capacity = capacity
        self.mime = _MIME
        # hand-kept LRU, not functools.lru_cache: it is bounded in entries and shared across threads under
        # one lock, and items are byte strings keyed by path (lru_cache cannot evict by our own capacity policy)
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = Lock()

    def get(self, item_id: str, read: Callable[[], bytes]) -> bytes:
        """The item's thumbnail; ``read`` gives the image file's bytes when it is not cached."""
        with self._lock:
            if item_id in self._items:
                self._items.move_to_end(item_id)
                return self._items[item_id]
        data = self._render(read())
        with self._lock:
            self._items[item_id] = data
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return data

    def _render(self, encoded: bytes) -> bytes:
        img = open_image(encoded)  # raises ItemError for unreadable files and images over the pixel limit
        img.thumbnail((self.size_px, self.size_px), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        img.save(out, _FORMAT, quality=85) if _FORMAT == "WEBP" else img.save(out, _FORMAT, optimize=True)
        return out.getvalue()
