"""Encoder registry and the default encoder for each modality kind."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from modalign._registry import Registry
from modalign.encoders.base import Encoder

ENCODERS: Registry[Encoder] = Registry("encoder")

#: what ``fit`` uses for a modality when ``--encoders`` does not say. Images: EfficientNet-Lite0 is
#: ~2x faster than DINOv2-S on CPU and its default output agreed more with text on emoji
#: (mutual-kNN 0.205 vs 0.14-0.18 for DINOv2 layers); dinov2-s stays one ``--encoders`` away.
DEFAULT_ENCODER_FOR_KIND = {
    "text": "minilm",
    "image": "effnet-lite0",
    "audio": "whisper-base",
    "vector": "vectors",
}


def _freeze(config: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, repr(v)) for k, v in config.items()))


@lru_cache(maxsize=16)
def _cached(name: str, frozen: tuple[tuple[str, Any], ...], config_json: str) -> Encoder:
    return ENCODERS.create(name, **json.loads(config_json))


def get_encoder(name: str, **config: Any) -> Encoder:
    """A shared instance of a *built-in* encoder by name.

    ``modalign.encoders.get_encoder`` (``encoders/spec.py``) is the one to use: it takes every spec
    (``hf:``, ``st:``, ``onnx:``, ``py:``, plugins), checks options and reloads changed weights. The
    built-ins are registered before this runs: importing this module runs ``modalign/encoders/__init__``.
    """
    ENCODERS.get(name)  # raises a clear error for an unknown name
    return _cached(name, _freeze(config), json.dumps(config, sort_keys=True))
