"""A transformers text model from a local folder: every hidden state is a layer, mean or CLS pooled."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalign.encoders.base import Encoder
from modalign.encoders.onnx_runtime import check_runtime
from modalign.encoders.text_batch import TextGraph, hidden_states, text_feature_config
from modalign.encoders.weights import weight_files

POOLINGS = ("mean", "cls")


class HFTextEncoder(Encoder):
    """Layers ``emb`` (embedding output) and ``layer1``..``layerN``; the last is the default.

    ``pooling="mean"`` (default) averages real tokens, as sentence encoders are trained; ``"cls"``
    takes token 0, for models trained with a classification token. ``max_length`` truncates.
    ``runtime``: torch, onnx or onnx-int8, as for ``minilm`` (the export is keyed by this folder's weights).
    """

    name = "hf-text"
    kind = "text"
    version = "1"
    batch_size = 64

    def __init__(self, path: Path, pooling: str = "mean", max_length: int = 512, runtime: str = "torch") -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"hf: text pooling must be one of {POOLINGS}, got {pooling!r}")
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the library never prints
        self.path = Path(path)
        self.runtime = check_runtime(f"hf:{path}", runtime)
        self.pooling = pooling
        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)

        def load_model() -> Any:
            return AutoModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True).eval()

        self.max_length = int(min(max_length, getattr(self._tokenizer, "model_max_length", max_length)))
        self._torch = torch
        n_hidden = int(config.num_hidden_layers)
        self._layers = ("emb", *(f"layer{i}" for i in range(1, n_hidden + 1)))
        self._hidden_size = int(config.hidden_size)
        # an onnx runtime loads the torch model only to export its graph once (the session has its own weights)
        self._model: Any = load_model() if self.runtime == "torch" else None
        self._graph = None if self.runtime == "torch" else \
            TextGraph(self.name, weight_files(self.path), self._tokenizer, n_hidden, load_model, self.runtime)

    @property
    def dim(self) -> int:
        return self._hidden_size

    @property
    def layers(self) -> tuple[str, ...]:
        return self._layers

    def config(self) -> dict[str, Any]:
        return {"pooling": self.pooling, "max_length": self.max_length, "runtime": self.runtime}

    def feature_config(self) -> dict[str, Any]:
        return text_feature_config(self.config())

    def weight_files(self) -> Sequence[Path]:
        return weight_files(self.path)

    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        if self._graph is not None:
            index = {layer: self._layers.index(layer) for layer in layers}
            arrays, np_mask, np_denom = self._graph.hidden_states(items, self.max_length, list(index.values()))
            return {layer: (arrays[i][:, 0] if self.pooling == "cls" else (arrays[i] * np_mask).sum(1) / np_denom)
                    .astype(np.float32) for layer, i in index.items()}
        states, mask, denom = hidden_states(self._tokenizer, self._model, items, self.max_length)
        result = {}
        for layer in layers:
            hidden = states[self._layers.index(layer)]
            pooled = hidden[:, 0] if self.pooling == "cls" else (hidden * mask).sum(1) / denom
            result[layer] = pooled.numpy().astype(np.float32)
        return result
