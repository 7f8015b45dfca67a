"""Frozen pretrained encoders, one file each; importing this package registers all of them."""

# Each module registers itself with ENCODERS. Modules whose optional dependency is missing
# still register: they fail with a clear message only when instantiated.
from modalign.encoders import dinov2, e5, effnet, minilm, vectors, whisper  # noqa: F401
from modalign.encoders.base import Encoder
from modalign.encoders.registry import DEFAULT_ENCODER_FOR_KIND, ENCODERS, get_encoder

__all__ = ["DEFAULT_ENCODER_FOR_KIND", "ENCODERS", "Encoder", "get_encoder"]
