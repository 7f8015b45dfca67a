"""Checking vector values (inline lists and .npy files) before they become float32 arrays.

Everything here raises ``ValueError`` with a reason a person can act on (the caller adds the row or
file); nothing is allocated from a size a file merely claims. Pure numpy, so the manifest validator
and the vectors encoder share it without importing each other.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npformat

F32_MAX = float(np.finfo(np.float32).max)

#: dtype kinds a vector file may hold: bool, signed/unsigned int, float
_NUMERIC_KINDS = "biuf"

#: enough rows to find a column's majority dimension without opening every .npy of a large manifest
DIM_SAMPLE = 10_000

_HEADER_READERS = {(1, 0): npformat.read_array_header_1_0, (2, 0): npformat.read_array_header_2_0}


def float32_vector(values: Any) -> np.ndarray:
    """A finite 1-D float32 array from numbers, or ValueError naming the first value that does not fit."""
    if isinstance(values, np.ndarray):
        arr = values
    else:
        if isinstance(values, (list, tuple)) and not all(
                isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
            raise ValueError("vector must be a list of numbers")
        try:
            arr = np.asarray(values, dtype=np.float64)
        except OverflowError:
            # Python ints have no size limit; float64 conversion fails above ~1.8e308
            big = next((v for v in values if isinstance(v, int) and abs(v) > F32_MAX), None)
            digits = len(str(abs(big))) if big is not None else "huge"
            raise ValueError(f"a {digits}-digit integer is outside the float32 range (±{F32_MAX:.3g})") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a list of numbers: {exc}") from None
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise ValueError(f"vector holds {arr.dtype.str} values, not numbers")
    if arr.ndim != 1:
        raise ValueError(f"vector must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("empty vector")
    wide = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(wide)):
        raise ValueError("vector contains NaN or inf")
    over = np.flatnonzero(np.abs(wide) > F32_MAX)
    if over.size:
        raise ValueError(f"value {wide[over[0]]:g} is outside the float32 range (±{F32_MAX:.3g})")
    return wide.astype(np.float32)


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """(shape, dtype, data offset) of a .npy file, checked against its size; nothing past the header is read."""
    size = path.stat().st_size
    if size == 0:
        raise ValueError("file is empty (0 bytes)")
    with path.open("rb") as fh:
        try:
            version = npformat.read_magic(fh)
            if version not in _HEADER_READERS:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _fortran, dtype = _HEADER_READERS[version](fh, max_header_size=10_000)
        except (ValueError, EOFError, OSError, SyntaxError, TypeError) as exc:
            raise ValueError(f"cannot read .npy vector: {exc}") from None
        offset = fh.tell()
    if dtype.hasobject:
        raise ValueError("the .npy file holds Python objects; refusing to unpickle it (allow_pickle=False)")
    if dtype.kind not in _NUMERIC_KINDS:
        raise ValueError(f"vector holds {dtype.str} values, not numbers")
    # Python ints: the product cannot overflow, so a claimed 2**62 x 2**62 shape is caught here too
    need = math.prod(int(d) for d in shape) * dtype.itemsize
    if need > size - offset:
        raise ValueError(f"the .npy header claims shape {tuple(shape)} of {dtype.str} ({need} bytes), "
                         f"but the file has {size - offset} bytes of data")
    return tuple(int(d) for d in shape), dtype, offset


def read_npy(path: Path) -> np.ndarray:
    """A .npy vector file, header checked first (size, dtype, no pickle), as a finite float32 vector."""
    npy_header(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"cannot read .npy vector: {exc}") from None
    return float32_vector(np.asarray(arr).reshape(-1) if np.ndim(arr) == 0 else arr)


def vector_dim(value: Any) -> int | None:
    """The length of a vector item, from a .npy header or the values; None where it cannot be told."""
    try:
        if isinstance(value, (str, Path)):
            shape = npy_header(Path(value))[0]
            return shape[0] if len(shape) == 1 else None
        if isinstance(value, np.ndarray):
            return int(value.shape[0]) if value.ndim == 1 else None
        if isinstance(value, (list, tuple)):
            return len(value)
    except (ValueError, OSError):
        return None
    return None


def majority_dim(dims: Iterable[int | None]) -> int | None:
    """The most common dimension (ties: the one seen first), ignoring unknowns."""
    counts = Counter(d for d in dims if d is not None and d > 0)
    if not counts:
        return None
    best = max(counts.values())
    return next(d for d in counts if counts[d] == best)  # Counter keeps first-seen order


def column_dim(values: Sequence[Any]) -> int | None:
    """A vector column's dimension: the majority over (a sample of) its present values."""
    present = (v for v in values if v is not None)
    return majority_dim(vector_dim(v) for _, v in zip(range(DIM_SAMPLE), present, strict=False))
