"""Image loading and preprocessing shared by the image encoders (Pillow + numpy, no torchvision).

Every failure to read one image becomes an :class:`~modalign.errors.ItemError` naming the item, so a
bad file in a manifest is reported instead of surfacing as a raw Pillow traceback.
"""

from __future__ import annotations

import contextlib
import io
import struct
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from modalign.cancel import check_deadline
from modalign.errors import ItemError

#: refuse images above this many pixels (decompression-bomb guard; 50 MP covers any camera photo)
MAX_PIXELS = 50_000_000
#: refuse images longer than this many times their width (or the reverse): a 1x20,000 PNG of 163 bytes
#: passes the pixel cap, but resizing its short side to 224 asks for 1 G pixels (panoramas are ~10:1)
MAX_ASPECT = 100
#: refuse a resize (short side to the model's size, before the centre crop) to more pixels than this
MAX_RESIZED_PIXELS = 32_000_000

#: pixels all threads of a process may hold decoded at once. A server handling 8 uploads of 49 MP PNGs
#: at a time peaked at 2.2 GB; with this budget, two at most decode together and the rest wait their turn.
DECODE_BUDGET_PIXELS = 2 * MAX_PIXELS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: what Pillow raises for unreadable, truncated or malformed files (UnidentifiedImageError is an OSError)
_PIL_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    IndexError,
    Image.DecompressionBombError,
)


def _check_size(item: object, size: tuple[int, int]) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ItemError(item, f"image has an empty size {width}x{height}")
    if width * height > MAX_PIXELS:
        raise ItemError(item, f"image is {width}x{height} pixels, above the limit of {MAX_PIXELS} pixels")
    if max(width, height) > MAX_ASPECT * min(width, height):
        ratio = max(width, height) / min(width, height)
        raise ItemError(item, f"image is {width}x{height} pixels: its aspect ratio {ratio:.0f}:1 is above the "
                              f"limit of {MAX_ASPECT}:1")


class _PixelBudget:
    """A counting semaphore in pixels: large decodes take turns; waiting stays cancellable by deadline."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._cond = threading.Condition()

    def acquire(self, pixels: int) -> int:
        pixels = min(pixels, self.capacity)  # one image alone always fits (sizes above the cap are refused)
        with self._cond:
            while self.in_use + pixels > self.capacity:
                self._cond.wait(timeout=0.05)
                check_deadline()  # a request past its timeout gives up its place in the queue
            self.in_use += pixels
        return pixels

    def release(self, pixels: int) -> None:
        with self._cond:
            self.in_use -= pixels
            self._cond.notify_all()


_DECODE_BUDGET = _PixelBudget(DECODE_BUDGET_PIXELS)


def check_image_header(path: Path) -> None:
    """ItemError unless ``path`` starts like an image Pillow reads, of an allowed size: only the header is
    parsed, so a huge or bogus file is refused before anyone hashes or decodes it."""
    try:
        if path.stat().st_size == 0:
            raise ItemError(path, "image file is empty (0 bytes)")
        with Image.open(path) as img:
            _check_size(path, img.size)
    except ItemError:
        raise
    except FileNotFoundError:
        raise ItemError(path, "image file not found") from None
    except (*_PIL_ERRORS, OSError) as exc:
        raise ItemError(path, f"cannot read image: {type(exc).__name__}: {exc}") from None


def _high_depth_to_8bit(img: Image.Image) -> Image.Image:
    """Pillow clips 16-bit/float greyscale to 255 when converting; rescale instead."""
    arr = np.asarray(img, dtype=np.float32)
    if img.mode.startswith("I;16") or (img.mode == "I" and arr.max(initial=0.0) > 255):
        arr = arr / 257.0
    elif img.mode == "F" and arr.max(initial=0.0) <= 1.0:
        arr = arr * 255.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """RGB copy of ``img``; transparency is composited onto ``background`` (white: clip-art, emoji)."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _high_depth_to_8bit(img)
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def open_image(item: Any, draft_size: int | None = None) -> Image.Image:
    """Decode one item (path, ``str`` path, encoded ``bytes`` or a PIL image) to an RGB image.

    ``draft_size`` lets JPEG decoding downscale in the DCT domain (to at least that size), which makes
    large photos several times faster to read; the result stays deterministic. It applies to paths and
    bytes only: a PIL image handed in is already decoded, so a large JPEG passed as a PIL image gives
    slightly different pixels than the same file passed as a path (pass paths or bytes to match).
    """
    with decoded_image(item, draft_size) as img:
        return img


@contextlib.contextmanager
def decoded_image(item: Any, draft_size: int | None = None) -> Iterator[Image.Image]:
    """``open_image`` that holds the item's share of the process's pixel budget until the block ends,
    so a caller that resizes inside the block never has more than the budget decoded at full size."""
    if isinstance(item, Image.Image):
        _check_size(item, item.size)
        try:
            # same orientation as when the file is read from disk (a no-op once already applied)
            rgb = to_rgb(ImageOps.exif_transpose(item))
        except _PIL_ERRORS as exc:
            raise ItemError(item, f"cannot convert image: {exc}") from exc
        yield rgb
        return
    if isinstance(item, bytes | bytearray | memoryview):
        source: Any = io.BytesIO(bytes(item))
        label: object = f"<{len(item)} bytes of image data>"
    elif isinstance(item, str | Path):
        source = Path(item)
        label = item
        if source.is_file() and source.stat().st_size == 0:
            raise ItemError(item, "image file is empty (0 bytes)")
    else:
        raise ItemError(item, f"image encoder got {type(item).__name__}, expected a path or a PIL image")
    rgb, held = _decode(source, label, draft_size)
    try:
        yield rgb
    finally:
        _DECODE_BUDGET.release(held)


def _decode(source: Any, label: object, draft_size: int | None) -> tuple[Image.Image, int]:
    """(RGB image, pixels taken from the budget); on failure nothing stays taken."""
    held = 0
    try:
        # Image.open only parses the header, so the size check runs before any pixel is decoded;
        # it does not depend on the process-wide Image.MAX_IMAGE_PIXELS, which we leave alone
        with Image.open(source) as img:
            _check_size(label, img.size)
            if draft_size is not None and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            held = _DECODE_BUDGET.acquire(img.size[0] * img.size[1])
            img.load()
            # phone photos store their rotation in EXIF; show them as a viewer would. In place: the
            # default returns a full-size copy even when there is nothing to rotate
            ImageOps.exif_transpose(img, in_place=True)
            return to_rgb(img), held
    except BaseException as exc:
        _DECODE_BUDGET.release(held)
        if isinstance(exc, ItemError):
            raise
        if isinstance(exc, FileNotFoundError):
            raise ItemError(label, "image file not found") from exc
        if isinstance(exc, _PIL_ERRORS):
            raise ItemError(label, f"cannot read image: {type(exc).__name__}: {exc}") from exc
        raise


def resize_to_square(img: Image.Image, size: int, crop: bool = True) -> Image.Image:
    """Resize so the shorter side is ``size`` and center-crop (``crop``), or squash to ``size``x``size``."""
    width, height = img.size
    if not crop:
        return img.resize((size, size), Image.Resampling.BICUBIC)
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if new_w * new_h > MAX_RESIZED_PIXELS:  # decided before Pillow allocates the resized image
        raise ValueError(f"resizing {width}x{height} to {new_w}x{new_h} pixels is above the limit of "
                         f"{MAX_RESIZED_PIXELS} pixels")
    if (new_w, new_h) != (width, height):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def normalize(
    img: Image.Image,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """RGB image -> (3, H, W) float32, scaled to [0, 1] then standardised per channel."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_batch(
    items: Sequence[Any],
    size: int = 224,
    crop: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """Read and preprocess ``items`` into one (B, 3, size, size) float32 NCHW array."""
    out = np.empty((len(items), 3, size, size), dtype=np.float32)
    for i, item in enumerate(items):
        check_deadline()  # a server request past its timeout stops here instead of decoding on
        try:
            with decoded_image(item, draft_size=size) as img:
                out[i] = normalize(resize_to_square(img, size, crop=crop), mean, std)
        except ItemError:
            raise
        except _PIL_ERRORS as exc:
            raise ItemError(item, f"cannot resize image: {exc}") from exc
        except MemoryError:
            # the caps above should make this unreachable; if not, it is still this item's error
            raise ItemError(item, "not enough memory to decode and resize the image") from None
    return out
