"""Content-addressed, resumable, crash-safe feature cache.

Layout, one folder per encoder (``cache_id``)::

    <root>/<slug>/info.json                encoder id, layers and their dims
    <root>/<slug>/index.json               the complete shards: file, rows, sha256
    <root>/<slug>/shard-000001.safetensors "keys" uint8 (n, 16) + "layer.<name>" float32 (n, d)

A shard is written to a temp file, fsynced and renamed, and only then listed in ``index.json``
(itself replaced atomically under a lock). A process killed at any point leaves either a listed,
complete shard or an unlisted file that the next run deletes — so rows are never lost or doubled.
A shard whose checksum does not match is dropped and its rows are recomputed.

Concurrent writers share work: before encoding a chunk, a writer takes that chunk's claim lock
(``.claim-XX.lock``, one of 64 by the chunk's keys), re-reads the index and encodes only what
nobody stored meanwhile. A folder that cannot be written (read-only mount) is opened read-only:
reading works, writing raises ``StorageError`` naming the folder.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save

from modalign._io import atomic_write_bytes, file_lock, sha256_file, storage_error
from modalign.errors import ConfigError, StorageError
from modalign.features.keys import KEY_BYTES
from modalign.features.tensor_map import map_tensor

log = logging.getLogger(__name__)

SHARD_RE = re.compile(r"^shard-(\d{6})\.safetensors$")


def default_cache_root() -> Path:
    return Path(os.environ.get("MODALIGN_CACHE", Path.home() / ".cache" / "modalign" / "features"))


def _slug(cache_id: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", cache_id)[:48]
    digest = hashlib.sha256(cache_id.encode()).hexdigest()[:12]
    return f"{readable}-{digest}"


#: claim locks per encoder folder (a bounded number of lock files; two chunks sharing one just take turns)
CLAIM_BUCKETS = 64
#: errno values that mean "this folder cannot be written", where a complete cache still serves reads
_READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


def _read_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid feature cache info file: {exc}") from None
    except OSError as exc:
        raise storage_error(path, "read", exc) from None
    if not isinstance(info, dict):
        raise ConfigError(f"{path}: invalid feature cache info file: expected a JSON object")
    return info


class EncoderStore:
    """The shards of one encoder: look up rows by key, append new shards."""

    def __init__(self, folder: Path, cache_id: str, layer_dims: dict[str, int]) -> None:
        self.folder = folder
        self.cache_id = cache_id
        self.layer_dims = dict(layer_dims)
        self.read_only = False  # set when the folder turns out not writable (see ``_locked``)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if not folder.is_dir():
                raise storage_error(folder, "create the feature cache folder", exc) from None
        info = folder / "info.json"
        if info.exists():
            stored = _read_info(info)
            if stored.get("cache_id") != cache_id:
                raise RuntimeError(f"feature cache folder {folder} belongs to {stored.get('cache_id')!r}")
        else:
            atomic_write_bytes(
                info, json.dumps({"cache_id": cache_id, "layer_dims": self.layer_dims}, indent=1).encode()
            )
        self._lookup: dict[bytes, tuple[str, int]] = {}
        self._shards: dict[str, dict[str, Any]] = {}
        self._loaded: dict[str, dict[str, np.ndarray]] = {}
        self._maps: dict[tuple[str, str], np.ndarray] = {}  # (shard, layer) -> read-only memory map
        self._verified: set[str] = set()  # shards whose checksum was checked by this process
        self.refresh()

    # ---------------------------------------------------------------- index
    @contextlib.contextmanager
    def _locked(self) -> Iterator[bool]:
        """The index lock; yields False (no lock, nothing may be changed) when the folder is read-only."""
        if self.read_only:
            yield False
            return
        try:
            lock = file_lock(self.folder / ".lock")
            lock.__enter__()
        except StorageError as exc:
            cause = exc.__context__
            if not (isinstance(cause, OSError) and cause.errno in _READ_ONLY_ERRNOS):
                raise
            log.info("feature cache folder %s is read-only: reading only", self.folder)
            self.read_only = True
            yield False
            return
        try:
            yield True
        finally:
            lock.__exit__(None, None, None)

    @contextlib.contextmanager
    def claim(self, keys: list[bytes]) -> Iterator[None]:
        """Hold the claim lock of a chunk of ``keys`` while encoding it, then ``sync()`` again.

        Two processes extracting the same items chunk them alike, so the second waits for the first's
        shard and then finds its keys cached instead of encoding them again. Read-only: no lock.
        """
        if self.read_only or not keys:
            yield
            return
        bucket = hashlib.sha256(b"".join(keys)).digest()[0] % CLAIM_BUCKETS
        with file_lock(self.folder / f".claim-{bucket:02d}.lock"):
            self.sync()
            yield

    def sync(self) -> None:
        """Take in the shards other processes listed since the last look (reads only their keys)."""
        for entry in self._read_index():
            if entry["file"] in self._shards:
                continue
            keys = self._read_keys(entry["file"])
            if keys is None or len(keys) != entry["rows"]:
                continue  # being replaced or corrupt: the next refresh() decides
            self._shards[entry["file"]] = entry
            for row, key in enumerate(keys):
                self._lookup.setdefault(key, (entry["file"], row))

    def _read_index(self) -> list[dict[str, Any]]:
        path = self.folder / "index.json"
        if not path.exists():
            return []
        try:
            return list(json.loads(path.read_text())["shards"])
        except (json.JSONDecodeError, KeyError, TypeError):
            log.warning("feature cache index %s is unreadable; rebuilding from scratch", path)
            return []

    def refresh(self) -> None:
        """Re-read the index; drop orphan temp files and shards not listed (an interrupted write)."""
        with self._locked() as writable:
            entries = self._read_index()
            listed = {e["file"] for e in entries}
            for path in self.folder.iterdir() if writable else ():
                orphan_tmp = path.name.startswith(".shard-") and path.name.endswith(".tmp")
                if orphan_tmp or (SHARD_RE.match(path.name) and path.name not in listed):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
        self._shards = {e["file"]: e for e in entries}
        self._lookup = {}
        unreadable = []
        for entry in entries:
            keys = self._read_keys(entry["file"])
            if keys is None or len(keys) != entry["rows"]:
                unreadable.append(entry["file"])
                continue
            for row, key in enumerate(keys):
                self._lookup.setdefault(key, (entry["file"], row))
        for name in unreadable:
            self._drop_shard(name, "unreadable")

    def _read_keys(self, name: str) -> list[bytes] | None:
        # only the small "keys" tensor is read here; the features are read when needed
        try:
            with safe_open(str(self.folder / name), framework="numpy") as fh:
                keys = fh.get_tensor("keys")
        except Exception:  # truncated/corrupt file: safetensors raises several types
            return None
        return [bytes(row) for row in keys]

    def _drop_shard(self, name: str, reason: str) -> None:
        log.warning("feature cache shard %s/%s is %s; its rows will be recomputed", self.folder, name, reason)
        with self._locked() as writable:
            if writable:  # read-only: forgotten by this process only
                entries = [e for e in self._read_index() if e["file"] != name]
                atomic_write_bytes(self.folder / "index.json", json.dumps({"shards": entries}).encode())
                with contextlib.suppress(FileNotFoundError):
                    (self.folder / name).unlink()
        self._loaded.pop(name, None)
        self._maps = {k: v for k, v in self._maps.items() if k[0] != name}
        self._verified.discard(name)
        self._shards.pop(name, None)
        self._lookup = {k: v for k, v in self._lookup.items() if v[0] != name}

    # ---------------------------------------------------------------- read
    def contains(self, key: bytes) -> bool:
        return key in self._lookup

    def locate(self, key: bytes) -> tuple[str, int] | None:
        """(shard file, row) holding ``key``, or None when it is not cached."""
        return self._lookup.get(key)

    def mapped(self, name: str, layer: str) -> np.ndarray | None:
        """One layer of a shard as a read-only memory map (nothing read until rows are indexed);
        None if the shard is missing or corrupt (it is dropped). The checksum is verified once."""
        if (name, layer) in self._maps:
            return self._maps[(name, layer)]
        path = self.folder / name
        if name not in self._shards or not path.exists():
            self._drop_shard(name, "missing")
            return None
        if name not in self._verified:
            if sha256_file(path) != self._shards[name]["sha256"]:  # streamed in 1 MiB chunks: bounded memory
                self._drop_shard(name, "corrupt (checksum mismatch)")
                return None
            self._verified.add(name)
        arr = map_tensor(path, f"layer.{layer}")
        self._maps[(name, layer)] = arr
        return arr

    def _load_shard(self, name: str) -> dict[str, np.ndarray] | None:
        if name in self._loaded:
            return self._loaded[name]
        path = self.folder / name
        entry = self._shards[name]
        if not path.exists():
            self._drop_shard(name, "missing")
            return None
        if sha256_file(path) != entry["sha256"]:
            self._drop_shard(name, "corrupt (checksum mismatch)")
            return None
        tensors = load_file(str(path))
        self._loaded[name] = tensors
        return tensors

    def verify(self) -> int:
        """Check every shard's checksum now; return how many were dropped."""
        dropped = 0
        for name in list(self._shards):
            if self._load_shard(name) is None:
                dropped += 1
        self._loaded.clear()
        return dropped

    def fetch(self, keys: list[bytes], layers: list[str]) -> dict[str, np.ndarray] | None:
        """Features for ``keys`` (all must be cached); None if a shard turned out corrupt."""
        out = {layer: np.empty((len(keys), self.layer_dims[layer]), np.float32) for layer in layers}
        by_shard: dict[str, list[tuple[int, int]]] = {}
        for i, key in enumerate(keys):
            name, row = self._lookup[key]
            by_shard.setdefault(name, []).append((i, row))
        for name, pairs in by_shard.items():
            tensors = self._load_shard(name)
            if tensors is None:
                return None
            dst = np.array([p[0] for p in pairs])
            src = np.array([p[1] for p in pairs])
            for layer in layers:
                out[layer][dst] = tensors[f"layer.{layer}"][src]
        self._loaded.clear()  # bounded memory: shards are re-read (page cache) on the next fetch
        return out

    # ---------------------------------------------------------------- write
    def append(self, keys: list[bytes], feats: dict[str, np.ndarray]) -> None:
        """Write one shard atomically and list it; keys already cached (by another process) are fine."""
        if not keys:
            return
        tensors = {"keys": np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES).copy()}
        for layer, arr in feats.items():
            tensors[f"layer.{layer}"] = np.ascontiguousarray(arr, dtype=np.float32)
        with self._locked() as writable:
            if not writable:
                raise StorageError(f"{self.folder}: cannot store features: the feature cache folder is read-only")
            entries = self._read_index()
            used = [int(m.group(1)) for e in entries if (m := SHARD_RE.match(e["file"]))]
            name = f"shard-{(max(used) + 1 if used else 1):06d}.safetensors"
            # serialised once in memory: the checksum comes from these bytes, not from reading the file back
            data = save(tensors)
            atomic_write_bytes(self.folder / name, data)
            entry = {"file": name, "rows": len(keys), "sha256": hashlib.sha256(data).hexdigest()}
            entries.append(entry)
            atomic_write_bytes(self.folder / "index.json", json.dumps({"shards": entries}).encode())
        self._shards[name] = entry
        for row, key in enumerate(keys):
            self._lookup.setdefault(key, (name, row))

    def __len__(self) -> int:
        return len(self._lookup)


class FeatureCache:
    """Root of every encoder's store."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if not self.root.is_dir():
                raise storage_error(self.root, "create the feature cache folder", exc) from None
        self._stores: dict[str, EncoderStore] = {}

    def store(self, cache_id: str, layer_dims: dict[str, int]) -> EncoderStore:
        if cache_id not in self._stores:
            self._stores[cache_id] = EncoderStore(self.root / _slug(cache_id), cache_id, layer_dims)
        return self._stores[cache_id]
