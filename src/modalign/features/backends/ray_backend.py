"""Ray Data backend: ``map_batches`` with the encoder as a callable class, shards written by the driver.

Keys are hashed on the driver, only uncached items go to Ray, and every output batch becomes one
``EncoderStore.append`` shard — the very layout the local path writes — so a later ``extract`` finds
everything in the cache. Items that fail to encode are left out; the local pass then reports them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalign.encoders import get_encoder
from modalign.features.cache import FeatureCache
from modalign.features.keys import item_key

log = logging.getLogger(__name__)


class EncodeBatch:
    """Callable class for ``map_batches``: loads the encoder once per Ray actor."""

    def __init__(self, encoder_name: str, encoder_config: dict[str, Any]) -> None:
        self.encoder = get_encoder(encoder_name, **encoder_config)
        self.layers = list(self.encoder.layers)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from modalign.features.extract import _encode_isolating_errors

        items = [_decode(kind, value) for kind, value in zip(batch["kind"], batch["item"], strict=True)]
        out, ok_rows, _bad = _encode_isolating_errors(self.encoder, items, self.layers)
        ok = np.asarray(ok_rows, dtype=np.int64)
        result: dict[str, np.ndarray] = {"key": np.asarray(batch["key"])[ok]}
        for layer in self.layers:
            result[f"layer.{layer}"] = out[layer].astype(np.float32)
        return result


def _encode_item(item: Any) -> tuple[str, Any]:
    # Ray Data columns are arrow-friendly: paths and strings travel as str, vectors as lists
    if isinstance(item, Path):
        return "path", str(item)
    if isinstance(item, str):
        return "str", item
    if isinstance(item, np.ndarray):
        return "array", np.asarray(item, np.float32).tolist()
    raise TypeError(f"the ray backend cannot ship items of type {type(item).__name__}")


def _decode(kind: str, value: Any) -> Any:
    if kind == "path":
        return Path(value)
    if kind == "array":
        return np.asarray(value, np.float32)
    return str(value)


class RayBackend:
    """Encode uncached items on a Ray cluster (``address=None``: join or start a local one)."""

    name = "ray"

    def __init__(self, address: str | None = None, concurrency: int = 2, batch_size: int = 64,
                 num_cpus_per_worker: float = 1.0) -> None:
        self.address = address
        self.concurrency = int(concurrency)
        self.batch_size = int(batch_size)
        self.num_cpus_per_worker = float(num_cpus_per_worker)

    def _init(self) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)

    def fill(self, encoder_name: str, encoder_config: dict[str, Any], items: Sequence[Any], cache: FeatureCache,
             progress: Callable[[int], None] | None = None) -> int:
        """Cache the features of every layer of ``items``; return how many items were sent to Ray."""
        try:
            import ray.data
        except ImportError as exc:
            raise RuntimeError("--backend ray needs Ray Data: pip install 'modalign[ray]'") from exc
        encoder = get_encoder(encoder_name, **encoder_config)
        store = cache.store(encoder.cache_id, encoder.layer_dims)
        rows: list[dict[str, Any]] = []
        seen: set[bytes] = set()
        for item in items:
            try:
                key = item_key(item)
            except (TypeError, OSError):
                continue  # unreadable/in-memory items: the local pass reports or encodes them
            if store.contains(key) or key in seen:
                continue
            seen.add(key)
            kind, value = _encode_item(item)
            rows.append({"key": np.frombuffer(key, np.uint8), "kind": kind, "item": value})
        if progress is not None and len(items) > len(rows):
            progress(len(items) - len(rows))
        if not rows:
            return 0
        self._init()
        ds = ray.data.from_items(rows).map_batches(
            EncodeBatch, fn_constructor_args=(encoder_name, encoder_config), batch_size=self.batch_size,
            concurrency=self.concurrency, num_cpus=self.num_cpus_per_worker, batch_format="numpy",
        )
        layers = list(encoder.layers)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            keys = [bytes(np.asarray(k, np.uint8)) for k in batch["key"]]
            store.append(keys, {layer: np.asarray(batch[f"layer.{layer}"], np.float32) for layer in layers})
            if progress is not None:
                progress(len(keys))
        return len(rows)
