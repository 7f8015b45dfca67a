"""Encode items through the feature cache: only what is not cached yet is computed."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modalign.encoders.audio_io import check_audio_header
from modalign.encoders.base import Encoder
from modalign.encoders.image_io import check_image_header
from modalign.errors import ItemError
from modalign.features.cache import FeatureCache
from modalign.features.keys import item_key

log = logging.getLogger(__name__)

OnError = Literal["skip", "fail"]


#: per encoder kind: the header check every file item passes before it is hashed or decoded
HEADER_CHECKS: dict[str, Callable[[Path], None]] = {"image": check_image_header, "audio": check_audio_header}

@dataclass
class Extraction:
    """Features of the items that could be encoded, in input order, plus what failed and why."""

    features: dict[str, np.ndarray]  # layer -> (n_ok, d)
    ok: np.ndarray  # bool (n_items,)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (item index, reason)
    n_encoded: int = 0  # items actually run through the encoder (0 = everything came from the cache)
    keys: list[bytes | None] = field(default_factory=list)  # each item's cache key (None: not cacheable)

    def full(self, layer: str) -> np.ndarray:
        """(n_items, d) with NaN rows where the item failed."""
        arr = self.features[layer]
        out = np.full((len(self.ok), arr.shape[1]), np.nan, np.float32)
        out[self.ok] = arr
        return out


def _encode_isolating_errors(
    encoder: Encoder, items: Sequence[Any], layers: Sequence[str]
) -> tuple[dict[str, np.ndarray], list[int], list[tuple[int, str]]]:
    """Encode a batch; when it fails on a bad item, retry item by item so one bad row costs one row."""
    try:
        return encoder.encode(items, layers=layers), list(range(len(items))), []
    except ItemError:
        pass
    ok_rows: list[int] = []
    parts: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    errors: list[tuple[int, str]] = []
    for i, item in enumerate(items):
        try:
            feats = encoder.encode([item], layers=layers)
        except ItemError as exc:
            errors.append((i, exc.reason))
            continue
        ok_rows.append(i)
        for layer in layers:
            parts[layer].append(feats[layer])
    dims = encoder.layer_dims
    out = {
        layer: np.concatenate(p) if p else np.zeros((0, dims[layer]), np.float32) for layer, p in parts.items()
    }
    return out, ok_rows, errors


def extract(
    encoder: Encoder,
    items: Sequence[Any],
    cache: FeatureCache | None = None,
    layers: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
    on_error: OnError = "skip",
    shard_size: int = 256,
    should_stop: Callable[[], bool] | None = None,
    fetch: bool = True,
) -> Extraction:
    """Features of ``items`` for ``layers`` (default: every layer), through ``cache`` when given.

    Every layer is computed and cached together (one encoder pass gives all of them), so
    layer selection later costs no extra encoding. ``progress(n)`` is called with items done.
    ``fetch=False`` (needs ``cache``) only makes sure every item is cached: ``features`` stays empty and
    the caller reads the rows it needs from the shards (``reader.matrix_for_keys``), so nothing of size
    n_items × dim is ever held in memory.
    """
    if not fetch and cache is None:
        raise ValueError("extract(fetch=False) needs a feature cache to leave the features in")
    wanted = list(encoder.layers if layers is None else layers)
    n = len(items)
    keys: list[bytes | None] = []
    errors: list[tuple[int, str]] = []
    check_header = HEADER_CHECKS.get(encoder.kind)
    for i, item in enumerate(items):
        try:
            if check_header is not None and isinstance(item, Path):
                check_header(item)  # before the file is hashed: a 20 GB file of zeros named .png costs nothing
            keys.append(item_key(item) if cache is not None else None)
        except ItemError as exc:
            keys.append(None)
            errors.append((i, exc.reason))
        except TypeError:
            keys.append(None)  # in-memory items (a PIL image from an upload) bypass the cache
        except OSError as exc:
            keys.append(None)
            errors.append((i, f"cannot read file: {exc.strerror or exc}"))
    failed = {i for i, _ in errors}
    if not fetch and any(key is None and i not in failed for i, key in enumerate(keys)):
        raise ValueError("extract(fetch=False): an item cannot be cached (an in-memory object); use fetch=True")
    if errors and on_error == "fail":
        raise ItemError(items[errors[0][0]], errors[0][1])

    store = cache.store(encoder.cache_id, encoder.layer_dims) if cache is not None else None
    feats: dict[str, np.ndarray] = {layer: np.zeros((n if fetch else 0, encoder.layer_dims[layer]), np.float32)
                                    for layer in wanted}
    ok = np.zeros(n, dtype=bool)
    n_encoded = 0
    for _attempt in range(3):  # a corrupt shard found while reading sends its rows back to "todo"
        todo_unique: dict[bytes, int] = {}
        uncached: list[int] = []
        for i, key in enumerate(keys):
            if i in failed or ok[i]:
                continue
            if key is None:
                uncached.append(i)
            elif store is None or not store.contains(key):
                todo_unique.setdefault(key, i)
        hit = [i for i, key in enumerate(keys) if key is not None and i not in failed and not ok[i]
               and key not in todo_unique]
        if progress is not None and hit:
            progress(len(hit))

        to_encode = list(todo_unique.values()) + uncached
        direct: dict[int, dict[str, np.ndarray]] = {}
        all_layers = list(encoder.layers)
        for start in range(0, len(to_encode), shard_size):
            if should_stop is not None and should_stop():
                raise KeyboardInterrupt("extraction stopped")
            planned = to_encode[start : start + shard_size]
            claim = store.claim([k for i in planned if (k := keys[i]) is not None]) if store is not None \
                else contextlib.nullcontext()
            with claim:
                # another process may have stored some of these while this one waited for the claim
                chunk = [i for i in planned if keys[i] is None or store is None or not store.contains(keys[i])]
                out, ok_rows, bad = _encode_isolating_errors(encoder, [items[i] for i in chunk], all_layers) \
                    if chunk else ({}, [], [])
                n_encoded += len(chunk)
                for row, reason in bad:
                    failed.add(chunk[row])
                    errors.append((chunk[row], reason))
                    if on_error == "fail":
                        raise ItemError(items[chunk[row]], reason)
                good = [chunk[r] for r in ok_rows]
                cacheable = [(j, i) for j, i in enumerate(good) if keys[i] is not None]
                if store is not None and cacheable:
                    store.append([keys[i] for _, i in cacheable],  # type: ignore[misc]
                                 {layer: out[layer][[j for j, _ in cacheable]] for layer in all_layers})
            for j, i in enumerate(good):
                if keys[i] is None or store is None:
                    direct[i] = {layer: out[layer][j] for layer in wanted}
            if progress is not None:
                progress(len(planned))

        for i, row in direct.items():
            for layer in wanted:
                feats[layer][i] = row[layer]
            ok[i] = True
        if store is not None:
            need = [i for i, key in enumerate(keys) if key is not None and i not in failed and not ok[i]]
            if not fetch:
                ok[[i for i in need if store.contains(keys[i])]] = True  # type: ignore[arg-type]
                break
            got = store.fetch([keys[i] for i in need], wanted) if need else {}  # type: ignore[misc]
            if got is None:
                continue  # a shard was corrupt and dropped: encode those rows again
            for layer in wanted:
                if need:
                    feats[layer][need] = got[layer]
            ok[need] = True
        break
    # items that share a failed item's content were never tried on their own: each gets the same error
    failed_keys = {keys[i]: reason for i, reason in errors if keys[i] is not None}
    for i, key in enumerate(keys):
        if key in failed_keys and i not in failed and not ok[i]:
            failed.add(i)
            errors.append((i, failed_keys[key]))
    errors.sort()
    return Extraction(features={layer: arr[ok] if fetch else arr for layer, arr in feats.items()}, ok=ok,
                      errors=errors, n_encoded=n_encoded, keys=keys)
