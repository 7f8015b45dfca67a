"""``milvus``: one Milvus collection per modality, through pymilvus's ``MilvusClient``.

A path starts Milvus Lite (``milvus-lite``: an embedded Milvus that serves the Milvus gRPC API from this
process, its data under that path); ``milvus://host:port`` (or ``http(s)://``) reaches a Milvus server or
cluster with the same calls. Collections are created with strong consistency, so a search sees every
insert that returned; Milvus Lite writes each insert to its write-ahead log before returning.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modalign.errors import ConfigError
from modalign.search.backends.base import as_queries
from modalign.search.stores.base import ExternalCorpus, VectorStore, collection_name

DEFAULTS: dict[str, Any] = {"index_type": "HNSW", "m": 16, "ef_construction": 200, "ef_search": 128}
_BATCH = 5000  # rows per insert / get / delete call (requests stay well under gRPC's message limit)
_TEXT = 8192  # characters kept of an item's text or source path in the collection
#: open MilvusStores per Milvus Lite path: the embedded server (and its folder lock) goes with the last one
_LITE_USERS: dict[str, int] = {}
#: faiss's message for a search-index file it could not read whole
_TORN_INDEX_FILE = re.compile(r"read error in (\S+\.idx)\b")

log = logging.getLogger(__name__)


def load_collection(client: Any, collection: str, lite_folder: str | None) -> None:
    """``client.load_collection``; under Milvus Lite also mends a search-index file a killed writer tore.

    Milvus Lite builds each segment's HNSW sidecar (``*.idx``) on load and writes it in place, not through a
    rename: a writer killed mid-write leaves a truncated file, and every later load fails on it. The
    sidecar is derived from the segment's own rows, so it is deleted (only inside the store's folder) and
    Milvus Lite builds it again.
    """
    for _ in range(64):  # one torn file per segment at most; a loop, never an endless one
        try:
            client.load_collection(collection)
            return
        except Exception as exc:  # pymilvus raises its own MilvusException for every server-side error
            found = _TORN_INDEX_FILE.search(str(exc)) if lite_folder is not None else None
            torn = Path(found.group(1)) if found else None
            if torn is None or not torn.is_file() or not torn.resolve().is_relative_to(Path(lite_folder).resolve()):
                raise
            log.warning("%s: removing a search-index file Milvus Lite could not read (%s); it is built again",
                        collection, torn.name)
            torn.unlink()
    client.load_collection(collection)


def _client(uri: str) -> Any:
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise ConfigError("the milvus store needs pymilvus and milvus-lite: pip install 'modalign[stores]'") from None
    target = "http://" + uri.removeprefix("milvus://") if uri.startswith("milvus://") else uri
    try:
        return MilvusClient(uri=target)
    except Exception as exc:  # pymilvus raises its own MilvusException and grpc errors alike
        raise ConfigError(f"milvus store {uri}: cannot connect ({exc})") from None


class MilvusCorpus(ExternalCorpus):
    name: ClassVar[str] = "milvus"

    def __init__(self, client: Any, collection: str, dim: int, params: Mapping[str, Any],
                 lite_folder: str | None = None) -> None:
        super().__init__(dim)
        self.client, self.collection, self.params = client, collection, {**DEFAULTS, **params}
        self.created = client.has_collection(collection)
        if self.created:  # a restarted Milvus keeps collections released until asked
            load_collection(client, collection, lite_folder)
        self._count = self._count_rows() if self.created else 0

    def config(self) -> dict[str, Any]:
        return dict(self.params)

    def _count_rows(self) -> int:
        found = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(found[0]["count(*)"])

    def _create(self) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pos", DataType.INT64, is_primary=True)
        schema.add_field("id", DataType.VARCHAR, max_length=_TEXT)
        schema.add_field("text", DataType.VARCHAR, max_length=_TEXT)
        schema.add_field("source", DataType.VARCHAR, max_length=_TEXT)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        index = self.client.prepare_index_params()
        kind = str(self.params["index_type"]).upper()
        build = {"M": int(self.params["m"]), "efConstruction": int(self.params["ef_construction"])} \
            if kind == "HNSW" else {"nlist": int(self.params.get("nlist", 1024))} if kind.startswith("IVF") else {}
        index.add_index(field_name="vector", index_type=kind, metric_type="IP", params=build)
        self.client.create_collection(self.collection, schema=schema, index_params=index, consistency_level="Strong")
        self.created = True

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.add_items(vectors, ids, [{} for _ in range(len(ids))])

    def add_items(self, vectors: np.ndarray, ids: np.ndarray, meta: list[dict[str, Any]]) -> None:
        if not len(ids):
            return
        if not self.created:
            self._create()
        vectors = np.asarray(vectors, np.float32)
        for start in range(0, len(ids), _BATCH):
            rows = [{"pos": int(ids[i]), "id": str(meta[i].get("id") or "")[:_TEXT],
                     "text": str(meta[i].get("text") or "")[:_TEXT], "source": str(meta[i].get("path") or "")[:_TEXT],
                     "vector": vectors[i]} for i in range(start, min(start + _BATCH, len(ids)))]
            self.client.insert(self.collection, rows)
        # sealed segments get their ANN index; Milvus Lite searches an unflushed buffer by brute force (~20x slower)
        self.client.flush(self.collection)
        self._count += len(ids)

    def remove(self, ids: np.ndarray) -> None:
        if not self.created or not len(ids):
            return
        for start in range(0, len(ids), _BATCH):
            self.client.delete(self.collection, ids=[int(i) for i in ids[start : start + _BATCH]])
        self._count = self._count_rows()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_queries(queries, self.dim)
        k = min(int(k), len(self), 16384)  # Milvus's topk limit
        if not self.created or k <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        params: dict[str, Any] = {"metric_type": "IP"}
        kind = str(self.params["index_type"]).upper()
        if kind == "HNSW":
            params["params"] = {"ef": max(int(self.params["ef_search"]), k)}
        elif kind.startswith("IVF"):
            params["params"] = {"nprobe": int(self.params.get("nprobe", 32))}
        found = self.client.search(self.collection, data=list(q), limit=k, output_fields=["pos"],
                                   filter=f"pos < {int(self.limit)}" if self.limit is not None else "",
                                   search_params=params)
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        for r, hits in enumerate(found):
            for j, hit in enumerate(hits[:k]):
                ids[r, j], scores[r, j] = int(hit["pos"]), float(hit["distance"])
        return scores, ids

    def ids(self) -> np.ndarray:
        if not self.created:
            return np.zeros(0, np.int64)
        out: list[int] = []
        it = self.client.query_iterator(self.collection, batch_size=_BATCH, filter="", output_fields=["pos"])
        while batch := it.next():
            out.extend(int(r["pos"]) for r in batch)
        it.close()
        return np.asarray(out, np.int64)

    def fetch(self, ids: np.ndarray) -> np.ndarray:
        out = np.zeros((len(ids), self.dim), np.float32)
        if not self.created or not len(ids):
            return out
        where = {int(p): i for i, p in enumerate(ids)}
        for start in range(0, len(ids), _BATCH):
            part = [int(i) for i in ids[start : start + _BATCH]]
            for row in self.client.get(self.collection, ids=part, output_fields=["pos", "vector"]):
                out[where[int(row["pos"])]] = np.asarray(row["vector"], np.float32)
        return out

    def __len__(self) -> int:
        return self._count


class MilvusStore(VectorStore):
    kind: ClassVar[str] = "milvus"

    def __init__(self, uri: str, prefix: str, dim: int, params: Mapping[str, Any] | None = None) -> None:
        self.uri, self.prefix, self.dim = uri, prefix, int(dim)
        self.params = {**DEFAULTS, **(params or {})}
        self.client = _client(uri)
        self.lite = "://" not in uri
        if self.lite:
            _LITE_USERS[uri] = _LITE_USERS.get(uri, 0) + 1

    def corpus(self, modality: str) -> MilvusCorpus:
        return MilvusCorpus(self.client, collection_name(self.prefix, modality), self.dim, self.params,
                            self.uri if self.lite else None)

    def close(self) -> None:
        self.client.close()
        if self.lite and _LITE_USERS.get(self.uri):
            _LITE_USERS[self.uri] -= 1
            if not _LITE_USERS[self.uri]:
                # another process (serve after index) can only open the folder once this one lets it go
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self.uri)
                del _LITE_USERS[self.uri]
            self.lite = False  # a second close is a no-op
