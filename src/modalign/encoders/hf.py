"""``hf:PATH``: a local Hugging Face transformers folder (``AutoModel``): text, vision or audio.

The kind is read from the folder: a feature extractor with a ``sampling_rate`` makes an audio
encoder, a vision config (``image_size`` and ``num_channels``, no vocabulary) or an image
preprocessor config an image encoder, anything with a tokenizer a text encoder. ``kind=...``
overrides the guess.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from modalign.encoders.base import Encoder
from modalign.encoders.errors import EncoderLoadError, check_options
from modalign.encoders.hf_audio import HFAudioEncoder
from modalign.encoders.hf_image import HFImageEncoder
from modalign.encoders.hf_text import HFTextEncoder

CLASSES: dict[str, type[Encoder]] = {"text": HFTextEncoder, "image": HFImageEncoder, "audio": HFAudioEncoder}

def guess_kind(folder: Path) -> str:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EncoderLoadError(f"hf:{folder}: no readable config.json ({exc})") from None
    preproc = folder / "preprocessor_config.json"
    proc: dict[str, Any] = {}
    if preproc.is_file():
        try:
            proc = json.loads(preproc.read_text())
        except json.JSONDecodeError:
            proc = {}
    if "sampling_rate" in proc:
        return "audio"
    if "image_processor_type" in proc or ("image_size" in config and "vocab_size" not in config):
        return "image"
    return "text"


def hf_encoder(path: str, kind: str | None = None, **options: Any) -> Encoder:
    """Build the right encoder class for the folder at ``path``; unknown options raise ``EncoderOptionError``."""
    folder = Path(path)
    if not folder.is_dir():
        raise EncoderLoadError(f"hf:{path}: folder not found")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    kind = kind or guess_kind(folder)
    if kind in CLASSES:
        cls = CLASSES[kind]
        check_options(f"hf:{path}", cls, options, reserved=("path",))
        return cls(folder, **options)
    raise EncoderLoadError(f"hf:{path}: {kind} models are not supported by hf: (text, image and audio are); "
                           "wrap it with py:module:factory or a plugin")

