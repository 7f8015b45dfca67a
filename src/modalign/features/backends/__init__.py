"""Extraction backends: where encoders run before ``extract`` reads the features from the cache.

Every backend fills the same feature cache (``EncoderStore`` shards), so what follows — fitting,
evaluation — does not care which one encoded the items.
"""

from modalign.features.backends.local import LocalBackend
from modalign.features.backends.ray_backend import RayBackend

BACKENDS = {"local": LocalBackend, "ray": RayBackend}

__all__ = ["BACKENDS", "LocalBackend", "RayBackend"]
