"""Precomputed features: the manifest already holds the vector (a list or a .npy path)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalign.data.vector_values import float32_vector, read_npy
from modalign.encoders.base import Encoder
from modalign.encoders.registry import ENCODERS
from modalign.errors import ItemError


@ENCODERS.register("vectors")
class VectorsEncoder(Encoder):
    """Identity encoder for ``vector``/``vec_*`` fields; ``dim`` must be given (or is set by ``fit``)."""

    name = "vectors"
    kind = "vector"
    version = "1"
    batch_size = 4096

    def __init__(self, dim: int) -> None:
        if dim <= 0:
            raise ValueError(f"vector dim must be positive, got {dim}")
        self._dim = int(dim)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def layers(self) -> tuple[str, ...]:
        return ("input",)

    def config(self) -> dict[str, Any]:
        return {"dim": self._dim}

    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        rows = []
        for item in items:
            vec = load_vector(item)
            if vec.shape != (self._dim,):
                raise ItemError(item, f"vector has shape {vec.shape}, expected ({self._dim},)")
            rows.append(vec)
        return {"input": np.stack(rows) if rows else np.zeros((0, self._dim), np.float32)}


def load_vector(item: Any) -> np.ndarray:
    """A vector item is a list/array of numbers or a path to a .npy file (header checked, no pickle)."""
    try:
        if isinstance(item, (str, Path)):
            return read_npy(Path(item))
        return float32_vector(item)
    except FileNotFoundError:
        raise ItemError(item, "vector file not found") from None
    except (ValueError, OSError) as exc:
        raise ItemError(item, str(exc)) from None
