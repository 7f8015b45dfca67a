"""``A+B``: several encoders of one kind as one, their default layers concatenated.

Each part's features are L2-normalised per row before concatenation, so a part's share of the
combined vector does not depend on its scale or width (EfficientNet's 1280-d head would otherwise
outweigh DINOv2's 384-d CLS token). One layer, ``concat``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalign.encoders.base import Encoder
from modalign.encoders.errors import EncoderLoadError


class CombinedEncoder(Encoder):
    name = "combined"
    kind = "text"  # replaced per instance by the parts' kind
    version = "1"

    def __init__(self, parts: Sequence[Encoder]) -> None:
        kinds = {p.kind for p in parts}
        if len(parts) < 2 or len(kinds) != 1:
            raise EncoderLoadError(f"combined encoder: needs 2+ parts of one kind, got {[p.name for p in parts]} "
                                   f"({sorted(kinds)})")
        self.parts = list(parts)
        self.kind = kinds.pop()  # type: ignore[misc]  # an instance's kind is its parts'
        self.batch_size = min(p.batch_size for p in parts)

    @property
    def dim(self) -> int:
        return sum(p.layer_dims[p.default_layer] for p in self.parts)

    @property
    def layers(self) -> tuple[str, ...]:
        return ("concat",)

    @property
    def cache_id(self) -> str:
        return f"{self.name}@{self.version}(" + "+".join(p.cache_id for p in self.parts) + ")"

    def weight_files(self) -> Sequence[Path]:
        return [f for p in self.parts for f in p.weight_files()]

    def config(self) -> dict[str, Any]:
        return {}

    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        chunks = []
        for part in self.parts:
            feats = part._encode_batch(items, [part.default_layer])[part.default_layer]
            feats = np.asarray(feats, dtype=np.float32)
            chunks.append(feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12))
        return {"concat": np.concatenate(chunks, axis=1)}
