"""A transformers vision model from a local folder: CLS (or mean) token of every hidden state."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalign.encoders.base import Encoder
from modalign.encoders.image_io import open_image
from modalign.encoders.weights import weight_files

POOLINGS = ("cls", "mean")


class HFImageEncoder(Encoder):
    """Layers ``emb``, ``layer1``..``layerN`` (raw residual stream) and ``final`` (the default).

    ``final`` is the model's ``last_hidden_state`` (after its final norm, ViT's usual embedding).
    ``pooling="cls"`` (default) takes token 0, the usual ViT/DINO image embedding; ``"mean"``
    averages the tokens. Convolutional hidden states (B, C, H, W) are average-pooled either way.
    Images go through the folder's ``AutoImageProcessor``.
    """

    name = "hf-image"
    kind = "image"
    version = "1"
    batch_size = 16

    def __init__(self, path: Path, pooling: str = "cls") -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"hf: image pooling must be one of {POOLINGS}, got {pooling!r}")
        import torch
        from transformers import AutoImageProcessor, AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.path = Path(path)
        self.pooling = pooling
        self._processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
        self._model = AutoModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True).eval()
        self._torch = torch
        n_hidden = int(self._model.config.num_hidden_layers)
        self._layers = ("emb", *(f"layer{i}" for i in range(1, n_hidden + 1)), "final")

    @property
    def dim(self) -> int:
        return int(self._model.config.hidden_size)

    @property
    def layers(self) -> tuple[str, ...]:
        return self._layers

    def config(self) -> dict[str, Any]:
        return {"pooling": self.pooling}

    def weight_files(self) -> Sequence[Path]:
        return weight_files(self.path)

    def _pool(self, hidden: Any) -> np.ndarray:
        if hidden.ndim == 4:  # (B, C, H, W) from a CNN backbone
            return hidden.mean(dim=(2, 3)).numpy()
        return (hidden[:, 0] if self.pooling == "cls" else hidden.mean(1)).numpy()

    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        images = [open_image(item) for item in items]
        pixels = self._processor(images=images, return_tensors="pt")
        with self._torch.inference_mode():
            out = self._model(**pixels, output_hidden_states=True)
        result = {}
        for layer in layers:
            hidden = out.last_hidden_state if layer == "final" else out.hidden_states[self._layers.index(layer)]
            result[layer] = self._pool(hidden).astype(np.float32)
        return result
