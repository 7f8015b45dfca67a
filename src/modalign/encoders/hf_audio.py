"""A transformers audio model from a local folder: every hidden state, mean-pooled over the clip.

The folder's ``AutoFeatureExtractor`` turns each clip (decoded and resampled to the extractor's
``sampling_rate``) into model inputs; ``AutoModel`` runs them (only the encoder of an encoder-decoder
model such as Whisper). Clips run one at a time, so a clip's features never depend on the other clips
of a batch (padding changes the output of models without an attention mask, e.g. wav2vec2-base's
group norm), which keeps the feature cache valid. Pooling: the mean over the output frames that cover
the clip: all of them, or, when the extractor pads to a fixed window (Whisper's 30 s, ``n_samples``),
the first ``ceil(frames * clip / window)``, the same frames the built-in ``whisper-*`` encoders average.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalign.encoders.audio_io import load_audio
from modalign.encoders.base import Encoder
from modalign.encoders.weights import weight_files


class HFAudioEncoder(Encoder):
    """Layers ``emb``, ``layer1``..``layerN`` (the model's ``hidden_states``; the last is the default)."""

    name = "hf-audio"
    kind = "audio"
    version = "1"
    batch_size = 8

    def __init__(self, path: Path) -> None:
        import torch
        from transformers import AutoFeatureExtractor, AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.path = Path(path)
        self._extractor = AutoFeatureExtractor.from_pretrained(str(path), local_files_only=True)
        model = AutoModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True).eval()
        # encoder-decoder speech models (Whisper): the encoder's states are the audio features
        self._model = model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else model
        self._config = model.config
        self._torch = torch
        self.sampling_rate = int(self._extractor.sampling_rate)
        self._inputs = tuple(self._extractor.model_input_names)
        n_hidden = int(self._config.num_hidden_layers)
        self._layers = ("emb", *(f"layer{i}" for i in range(1, n_hidden + 1)))

    @property
    def dim(self) -> int:
        return int(self._config.hidden_size)

    @property
    def layers(self) -> tuple[str, ...]:
        return self._layers

    def weight_files(self) -> Sequence[Path]:
        return weight_files(self.path)

    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        out = {layer: np.zeros((len(items), self.dim), np.float32) for layer in layers}
        window = int(getattr(self._extractor, "n_samples", 0) or 0)  # a fixed padded window, if the extractor has one
        for row, item in enumerate(items):
            wave = load_audio(item, sample_rate=self.sampling_rate)
            inputs = self._extractor(wave, sampling_rate=self.sampling_rate, return_tensors="pt")
            with self._torch.inference_mode():
                states = self._model(**{k: v for k, v in inputs.items() if k in self._inputs},
                                     output_hidden_states=True).hidden_states
            frames = int(states[-1].shape[1])
            valid = frames if window <= len(wave) else min(frames, max(1, math.ceil(frames * len(wave) / window)))
            for layer in layers:
                out[layer][row] = states[self._layers.index(layer)][0, :valid].mean(0).float().numpy()
        return out
