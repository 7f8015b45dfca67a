"""The frozen-encoder contract.

An encoder turns a batch of raw items of one modality kind into features of one or more layers.
Items are what ``PairedDataset`` hands out: ``str`` for text, a ``pathlib.Path`` for image/audio
files, a 1-D ``np.ndarray`` for vectors. Encoders never update weights.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modalign.encoders.errors import EncoderLoadError
from modalign.encoders.weights import files_sha256

ProgressCallback = Callable[[int], None]
"""Called with the number of items just finished."""


class Encoder(ABC):
    """Base class: subclasses set the class attributes and implement ``_encode_batch``.

    This is the public extension point (``modalign.Encoder``): implement ``dim``, ``layers`` and
    ``_encode_batch``; return constructor options from ``config`` and weight files from
    ``weight_files`` so saved models can be recreated and checked (see docs/encoders.md).
    """

    #: registry name (``minilm``, ``dinov2-s`` ...)
    name: ClassVar[str]
    #: modality kind it reads: ``text``, ``image``, ``audio`` or ``vector``
    kind: ClassVar[str]
    #: bump when preprocessing or pooling changes, so cached features are not reused
    version: ClassVar[str] = "1"
    #: preferred batch size on CPU
    batch_size: int = 32

    @property
    @abstractmethod
    def dim(self) -> int:
        """Feature dimension of the default layer (see ``layer_dims`` for the others)."""

    @property
    @abstractmethod
    def layers(self) -> tuple[str, ...]:
        """Available layer names, shallow to deep; the last one is the default output."""

    @property
    def layer_dims(self) -> dict[str, int]:
        """Feature dimension per layer (encoders whose blocks differ in width override this)."""
        return {layer: self.dim for layer in self.layers}

    @property
    def default_layer(self) -> str:
        return self.layers[-1]

    @property
    def cache_id(self) -> str:
        """Identifies the features this encoder produces (name, version, options, weights hash)."""
        opts = "".join(f",{k}={v}" for k, v in sorted(self.feature_config().items()))
        weights = self.weights_sha256
        # built-ins have no weight files here (their pip package version pins them): id unchanged
        return f"{self.name}@{self.version}{opts}" + (f"#{weights[:16]}" if weights else "")

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments needed to rebuild this encoder (JSON-serialisable)."""
        return {}

    def feature_config(self) -> dict[str, Any]:
        """The part of ``config`` that is in ``cache_id`` (all of it unless an encoder says otherwise)."""
        return self.config()

    def weight_files(self) -> Sequence[Path]:
        """Files whose content defines the features (hashed into ``weights_sha256``); none by default."""
        return ()

    @property
    def weights_sha256(self) -> str | None:
        """sha256 over ``weight_files`` (memoised per path, mtime and size), or None without files."""
        files = list(self.weight_files())
        if not files:
            return None
        try:
            return files_sha256(files, Path(os.path.commonpath([f.parent for f in files])))
        except FileNotFoundError as exc:
            raise EncoderLoadError(f"encoder {self.name!r}: weight file {exc.filename} is missing") from None

    @abstractmethod
    def _encode_batch(self, items: Sequence[Any], layers: Sequence[str]) -> dict[str, np.ndarray]:
        """Encode one batch; return {layer: (len(items), dim) float32}."""

    def encode(
        self,
        items: Sequence[Any],
        layers: Sequence[str] | None = None,
        batch_size: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> dict[str, np.ndarray]:
        """Encode ``items`` in batches; ``layers=None`` means every layer."""
        wanted = tuple(self.layers if layers is None else layers)
        unknown = [layer for layer in wanted if layer not in self.layers]
        if unknown:
            raise ValueError(f"encoder {self.name!r} has no layer(s) {unknown}; available: {list(self.layers)}")
        bs = batch_size or self.batch_size
        out: dict[str, list[np.ndarray]] = {layer: [] for layer in wanted}
        for start in range(0, len(items), bs):
            batch = items[start : start + bs]
            feats = self._encode_batch(batch, wanted)
            for layer in wanted:
                arr = np.asarray(feats[layer], dtype=np.float32)
                expected = (len(batch), self.layer_dims[layer])
                if arr.shape != expected:
                    raise RuntimeError(
                        f"encoder {self.name!r} layer {layer!r} returned shape {arr.shape}, expected {expected}"
                    )
                out[layer].append(arr)
            if progress is not None:
                progress(len(batch))
        return {
            layer: (np.concatenate(parts) if parts else np.zeros((0, self.layer_dims[layer]), np.float32))
            for layer, parts in out.items()
        }
