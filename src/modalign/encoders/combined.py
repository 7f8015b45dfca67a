"""``A+B``: several encoders of one kind (or several layers of one encoder) as one, concatenated.

Each part contributes one of its layers (its default, or the one ``layers`` names), L2-normalised per
row before concatenation, so a part's share of the combined vector does not depend on its scale or
width (EfficientNet's 1280-d head would otherwise outweigh DINOv2's 384-d CLS token). Centring is
left to the heads: they subtract the training mean of the whole vector, which is each part's own
training mean, coordinate by coordinate (an encoder has no data to centre on). One layer, ``concat``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalign.encoders.base import Encoder
from modalign.encoders.errors import EncoderLoadError


def split_layers(layers: str | Sequence[str]) -> list[str]:
    """``"head+final"`` or ``["head", "final"]`` → ``["head", "final"]``."""
    parts = layers.split("+") if isinstance(layers, str) else list(layers)
    if not parts or not all(isinstance(p, str) and p.strip() for p in parts):
        raise EncoderLoadError(f"combined encoder: layers must be names joined by '+' (e.g. head+final), "
                               f"got {layers!r}")
    return [p.strip() for p in parts]


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (an all-zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class CombinedEncoder(Encoder):
    name = "combined"
    kind = "text"  # replaced per instance by the parts' kind
    version = "1"

    def __init__(self, parts: Sequence[Encoder], layers: str | Sequence[str] | None = None) -> None:
        kinds = {p.kind for p in parts}
        if len(parts) < 2 or len(kinds) != 1:
            raise EncoderLoadError(f"combined encoder: needs 2+ parts of one kind, got {[p.name for p in parts]} "
                                   f"({sorted(kinds)})")
        self.parts = list(parts)
        self.kind = kinds.pop()  # type: ignore[misc]  # an instance's kind is its parts'
        self.batch_size = min(p.batch_size for p in parts)
        self._layers_given = layers is not None
        self.part_layers = split_layers(layers) if layers is not None else [p.default_layer for p in parts]
        if len(self.part_layers) != len(self.parts):
            raise EncoderLoadError(f"combined encoder: {len(self.parts)} parts but {len(self.part_layers)} layers "
                                   f"({'+'.join(self.part_layers)})")
        for part, layer in zip(self.parts, self.part_layers, strict=True):
            if layer not in part.layers:
                raise EncoderLoadError(f"combined encoder: part {part.name!r} has no layer {layer!r}; it has "
                                       f"{list(part.layers)}")

    @property
    def dim(self) -> int:
        return sum(p.layer_dims[layer] for p, layer in zip(self.parts, self.part_layers, strict=True))

    @property
    def layers(self) -> tuple[str, ...]:
        return ("concat",)

    @property
    def cache_id(self) -> str:
        # the default-layer id is unchanged from before per-part layers existed, so its caches stay valid
        ids = [p.cache_id + (f"[{layer}]" if self._layers_given else "")
               for p, layer in zip(self.parts, self.part_layers, strict=True)]
        return f"{self.name}@{self.version}(" + "+".join(ids) + ")"

    def weight_files(self) -> Sequence[Path]:
        return list(dict.fromkeys(f for p in self.parts for f in p.weight_files()))

    def config(self) -> dict[str, Any]:
        return {"layers": list(self.part_layers)} if self._layers_given else {}

    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        # one pass per distinct encoder, even when it gives several parts (head+stage7 of one network)
        wanted: dict[int, list[str]] = {}
        for part, layer in zip(self.parts, self.part_layers, strict=True):
            wanted.setdefault(id(part), []).append(layer)
        outs: dict[int, dict[str, np.ndarray]] = {}
        for part in self.parts:
            if id(part) not in outs:
                outs[id(part)] = part._encode_batch(items, list(dict.fromkeys(wanted[id(part)])))
        chunks = [unit_rows(outs[id(p)][layer]) for p, layer in zip(self.parts, self.part_layers, strict=True)]
        return {"concat": np.concatenate(chunks, axis=1)}
