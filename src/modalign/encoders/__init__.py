"""Frozen pretrained encoders, one file each; importing this package registers all of them."""

# Each module registers itself with ENCODERS. Modules whose optional dependency is missing
# still register: they fail with a clear message only when instantiated.
from modalign.encoders import dinov2, e5, effnet, minilm, vectors, whisper  # noqa: F401
from modalign.encoders.base import Encoder
from modalign.encoders.errors import EncoderLoadError, EncoderOptionError
from modalign.encoders.registry import DEFAULT_ENCODER_FOR_KIND, ENCODERS
from modalign.encoders.spec import EncoderChoice, canonical_spec, check_weights, get_encoder, split_choice

__all__ = ["DEFAULT_ENCODER_FOR_KIND", "ENCODERS", "Encoder", "EncoderChoice", "EncoderLoadError",
           "EncoderOptionError", "canonical_spec", "check_weights", "get_encoder", "split_choice"]
