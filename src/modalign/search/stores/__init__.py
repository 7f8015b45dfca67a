"""Index stores (``local``, ``lancedb``, ``milvus``), one file each; see ``base.py`` for the contract."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modalign.errors import ConfigError
from modalign.search.stores.base import ExternalCorpus, VectorStore, resolve_location
from modalign.search.stores.lancedb_store import LanceStore
from modalign.search.stores.local import LocalStore
from modalign.search.stores.milvus_store import MilvusStore

STORE_KINDS = ("local", "lancedb", "milvus")
#: where a store lives when no location is given: inside the index folder
DEFAULT_LOCATION = {"lancedb": "lancedb", "milvus": "milvus.db"}


def new_store_record(kind: str, uri: str | None = None, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``store`` entry of a new index's ``index.json``: kind, location and a collection-name prefix."""
    if kind not in STORE_KINDS:
        raise ConfigError(f"unknown store {kind!r}; choose one of {', '.join(STORE_KINDS)}")
    if kind == "local":
        if uri is not None:
            raise ConfigError("the local store lives in the index folder; it takes no location")
        return {"kind": "local"}
    if kind == "lancedb" and uri is not None and uri.startswith("milvus://"):
        raise ConfigError(f"{uri}: a milvus:// address needs --store milvus")
    if kind == "milvus" and uri is not None and "://" not in uri and not uri.endswith(".db"):
        raise ConfigError(f"{uri}: a Milvus Lite location is a path ending in .db (or give milvus://host:port)")
    # a random prefix: several indexes can share one database or Milvus cluster without clashing
    return {"kind": kind, "uri": uri, "prefix": f"modalign_{secrets.token_hex(6)}", "params": dict(params or {})}


def open_store(record: Mapping[str, Any], folder: Path, dim: int, backend: str,
               backend_params: Mapping[str, Any]) -> VectorStore:
    kind = record.get("kind", "local")
    if kind == "local":
        return LocalStore(dim, backend, backend_params)
    if kind not in DEFAULT_LOCATION:
        raise ConfigError(f"{folder}: unknown store {kind!r} in index.json")
    where = resolve_location(folder, record.get("uri"), DEFAULT_LOCATION[kind])
    cls = LanceStore if kind == "lancedb" else MilvusStore
    return cls(where, str(record["prefix"]), dim, record.get("params") or {})


def one_process_only(record: Mapping[str, Any], folder: Path) -> str | None:
    """Why only one process at a time can open this store, or None (any number can: serve --workers)."""
    if record.get("kind") != "milvus":
        return None
    where = resolve_location(folder, record.get("uri"), DEFAULT_LOCATION["milvus"])
    if "://" in where:
        return None
    return f"Milvus Lite locks its file {where} to one process (a Milvus server, milvus://, has no such limit)"


__all__ = ["DEFAULT_LOCATION", "STORE_KINDS", "ExternalCorpus", "LanceStore", "LocalStore", "MilvusStore",
           "VectorStore", "new_store_record", "one_process_only", "open_store"]
