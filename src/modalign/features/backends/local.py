"""The default backend: encode in this process, batch by batch, streaming shards into the cache."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from modalign.encoders import get_encoder
from modalign.features.cache import FeatureCache
from modalign.features.extract import extract


class LocalBackend:
    """``fill`` = ``extract`` through the cache in-process (torch/onnxruntime use the local cores)."""

    name = "local"

    def __init__(self, batch_size: int = 256) -> None:
        self.batch_size = int(batch_size)

    def fill(self, encoder_name: str, encoder_config: dict[str, Any], items: Sequence[Any], cache: FeatureCache,
             progress: Callable[[int], None] | None = None) -> int:
        """Cache the features of every layer of ``items``; return how many items were encoded."""
        encoder = get_encoder(encoder_name, **encoder_config)
        res = extract(encoder, items, cache, layers=None, progress=progress, shard_size=self.batch_size)
        return res.n_encoded
