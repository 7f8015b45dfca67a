"""``st:PATH``: a local sentence-transformers folder, with its own pooling and normalisation.

With ``sentence-transformers`` installed the folder is loaded by it (``backend="auto"``), so any
module stack it supports works; without it (or ``backend="transformers"``) ``modules.json`` is read
here: a Transformer module, a Pooling module (mean / cls / max / mean-sqrt-len) and an optional
Normalize module. One layer, ``sentence``. ``normalize=False`` drops the folder's Normalize step
(unit-norm features carry less for the heads' standardisation; the raw pooled mean is what the
built-in ``minilm`` returns).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalign.encoders.base import Encoder
from modalign.encoders.errors import EncoderLoadError
from modalign.encoders.weights import weight_files
from modalign.errors import ItemError

BACKENDS = ("auto", "sentence-transformers", "transformers")
_POOL_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
              "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len"}


def read_modules(folder: Path) -> tuple[str, bool, int]:
    """(pooling mode, has Normalize, max_seq_length) from the folder's own config files."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EncoderLoadError(f"st:{folder}: no readable modules.json ({exc})") from None
    types = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if not types or types[0] != "Transformer":
        raise EncoderLoadError(f"st:{folder}: expected a Transformer module first, got {types}; install "
                               "sentence-transformers to load other module stacks")
    unsupported = [t for t in types[1:] if t not in ("Pooling", "Normalize")]
    if unsupported:
        raise EncoderLoadError(f"st:{folder}: modules {unsupported} need sentence-transformers installed")
    pooling = "mean"
    for m in modules:
        if str(m.get("type", "")).endswith("Pooling"):
            cfg = json.loads((folder / m["path"] / "config.json").read_text())
            modes = [mode for key, mode in _POOL_KEYS.items() if cfg.get(key)]
            if len(modes) != 1:
                raise EncoderLoadError(f"st:{folder}: pooling {modes or 'none'} is not supported without "
                                       "sentence-transformers (one of cls, mean, max, mean_sqrt_len)")
            pooling = modes[0]
    bert_cfg = folder / "sentence_bert_config.json"
    max_len = int(json.loads(bert_cfg.read_text()).get("max_seq_length", 512)) if bert_cfg.is_file() else 512
    return pooling, "Normalize" in types, max_len


class SentenceTransformerEncoder(Encoder):
    """One layer, ``sentence``: the folder's sentence embedding."""

    name = "st"
    kind = "text"
    version = "1"
    batch_size = 64

    def __init__(self, path: Path, normalize: bool | None = None, backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"st: backend must be one of {BACKENDS}, got {backend!r}")
        self.path = Path(path)
        if not (self.path / "modules.json").is_file():
            raise EncoderLoadError(f"st:{path}: not a sentence-transformers folder (no modules.json)")
        if backend == "auto":
            have_st = importlib.util.find_spec("sentence_transformers") is not None
            backend = "sentence-transformers" if have_st else "transformers"
        self.backend = backend
        self._pooling, has_norm, self._max_len = read_modules(self.path) if backend == "transformers" \
            else ("", self._has_normalize(), 0)
        self.normalize = has_norm if normalize is None else bool(normalize)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the library never prints
        if backend == "sentence-transformers":
            self._load_st(has_norm)
        else:
            self._load_hf()

    def _has_normalize(self) -> bool:
        modules = json.loads((self.path / "modules.json").read_text())
        return any(str(m.get("type", "")).endswith("Normalize") for m in modules)

    def _load_st(self, has_norm: bool) -> None:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True,
                                    model_kwargs={"use_safetensors": True})  # never unpickle a .bin
        if has_norm and not self.normalize:
            # the stack minus its Normalize step; normalising here instead would differ only by rounding
            model = SentenceTransformer(modules=[m for m in model if type(m).__name__ != "Normalize"], device="cpu")
        self._st = model
        self._extra_norm = self.normalize and not has_norm  # normalize=True on a stack without Normalize
        # renamed in sentence-transformers 6 (the old name warns)
        dim_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self._dim = int(dim_of() or 0)

    def _load_hf(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        self._model = AutoModel.from_pretrained(str(self.path), local_files_only=True, use_safetensors=True).eval()
        self._dim = int(self._model.config.hidden_size)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def layers(self) -> tuple[str, ...]:
        return ("sentence",)

    def config(self) -> dict[str, Any]:
        return {"normalize": self.normalize, "backend": self.backend}

    def weight_files(self) -> Sequence[Path]:
        return weight_files(self.path)

    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        texts = []
        for item in items:
            if not isinstance(item, str):
                raise ItemError(item, f"text encoder got {type(item).__name__}, expected str")
            texts.append(item)
        if self.backend == "sentence-transformers":
            out = self._st.encode(texts, batch_size=max(len(texts), 1), convert_to_numpy=True,
                                  show_progress_bar=False, normalize_embeddings=self._extra_norm)
            return {"sentence": np.asarray(out, dtype=np.float32)}
        return {"sentence": self._encode_hf(texts)}

    def _encode_hf(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        tok = self._tokenizer(texts, padding=True, truncation=True, max_length=self._max_len, return_tensors="pt")
        with torch.inference_mode():
            hidden = self._model(**tok).last_hidden_state
        mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        if self._pooling == "cls":
            pooled = hidden[:, 0]
        elif self._pooling == "max":
            pooled = hidden.masked_fill(mask == 0, float("-inf")).max(1).values
        else:
            total = (hidden * mask).sum(1)
            count = mask.sum(1).clamp(min=1.0)
            pooled = total / (count.sqrt() if self._pooling == "mean_sqrt_len" else count)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=1)
        return pooled.numpy().astype(np.float32)
