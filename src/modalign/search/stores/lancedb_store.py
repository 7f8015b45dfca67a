"""``lancedb``: one Lance table per modality at a folder or URI (``pos``, ``id``, ``text``, ``source``, ``vector``).

Lance writes are versioned (a new fragment and manifest per add), so an add that returned is on disk
and a killed writer leaves at most unreferenced files. Tables are searched brute force until they
hold ``min_rows`` vectors, then through an IVF_FLAT index (~√n cells, ``nprobes`` searched, exact scores;
recall@10 0.999 at 100k in benchmarks/stores.py) or, to save memory, IVF_PQ whose candidates Lance
re-scores exactly (``refine_factor``). Rows added after the index are searched flat beside it until it
is rebuilt (once they pass ``rebuild_fraction`` of the table).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from modalign.errors import ConfigError
from modalign.search.backends.base import as_queries
from modalign.search.stores.base import ExternalCorpus, VectorStore, collection_name

DEFAULTS: dict[str, Any] = {"index_type": "IVF_FLAT", "min_rows": 20_000, "nprobes": 32, "refine_factor": 10,
                            "rebuild_fraction": 0.2}
_IN_CHUNK = 2000  # ids per "pos IN (...)" filter


def _lancedb() -> Any:
    try:
        import lancedb
    except ImportError:
        raise ConfigError("the lancedb store needs the lancedb package: pip install 'modalign[stores]'") from None
    return lancedb


def _in(ids: np.ndarray) -> str:
    return f"pos IN ({', '.join(str(int(i)) for i in ids)})"


class LanceCorpus(ExternalCorpus):
    name: ClassVar[str] = "lancedb"

    def __init__(self, db: Any, table: str, dim: int, params: Mapping[str, Any]) -> None:
        super().__init__(dim)
        self.db, self.table_name, self.params = db, table, {**DEFAULTS, **params}
        self.table = db.open_table(table) if table in self._names() else None
        self._count = self.table.count_rows() if self.table is not None else 0

    def _names(self) -> list[str]:
        return list(self.db.list_tables().tables)

    def config(self) -> dict[str, Any]:
        return dict(self.params)

    def _schema(self) -> pa.Schema:
        return pa.schema([("pos", pa.int64()), ("id", pa.string()), ("text", pa.string()), ("source", pa.string()),
                          ("vector", pa.list_(pa.float32(), self.dim))])

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.add_items(vectors, ids, [{} for _ in range(len(ids))])

    def add_items(self, vectors: np.ndarray, ids: np.ndarray, meta: list[dict[str, Any]]) -> None:
        if not len(ids):
            return
        flat = pa.array(np.ascontiguousarray(vectors, np.float32).ravel())
        batch = pa.table({"pos": pa.array(np.asarray(ids, np.int64)), "id": [m.get("id") for m in meta],
                          "text": [m.get("text") for m in meta], "source": [m.get("path") for m in meta],
                          "vector": pa.FixedSizeListArray.from_arrays(flat, self.dim)}, schema=self._schema())
        if self.table is None:
            self.table = self.db.create_table(self.table_name, schema=self._schema())
        self.table.add(batch)
        self._count += len(ids)
        self._maybe_index()

    def _maybe_index(self) -> None:
        assert self.table is not None
        if self._count < self.params["min_rows"]:
            return
        indices = self.table.list_indices()
        if indices:
            stats = self.table.index_stats(indices[0].name)
            if stats is not None and stats.num_unindexed_rows <= self.params["rebuild_fraction"] * self._count:
                return
        # ~sqrt(n) cells; for PQ 8 dims per code, the usual starting point (refine_factor recovers exact order)
        cells = max(8, round(math.sqrt(self._count)))
        kind = str(self.params["index_type"]).upper()
        extra: dict[str, Any] = {}
        if "PQ" in kind:
            extra["num_sub_vectors"] = next(s for s in (self.dim // 8, self.dim // 4, self.dim // 2, self.dim, 1)
                                            if s and self.dim % s == 0)
        with warnings.catch_warnings():  # the keyword form is deprecated in 0.40 but is the one older versions take
            warnings.simplefilter("ignore", DeprecationWarning)
            self.table.create_index(vector_column_name="vector", metric="dot", index_type=kind,
                                    num_partitions=cells, replace=True, **extra)

    def remove(self, ids: np.ndarray) -> None:
        if self.table is None or not len(ids):
            return
        before = self.table.count_rows()
        for start in range(0, len(ids), _IN_CHUNK):
            self.table.delete(_in(ids[start : start + _IN_CHUNK]))
        self._count -= before - self.table.count_rows()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_queries(queries, self.dim)
        k = min(int(k), len(self))
        if self.table is None or k <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        for r in range(len(q)):
            query = self.table.search(q[r]).distance_type("dot").limit(k).nprobes(int(self.params["nprobes"]))
            if "PQ" in str(self.params["index_type"]).upper():
                query = query.refine_factor(int(self.params["refine_factor"]))
            query = query.select(["pos", "_distance"])
            if self.limit is not None:
                query = query.where(f"pos < {int(self.limit)}", prefilter=True)
            found = query.to_arrow()
            n = found.num_rows
            ids[r, :n] = found["pos"].to_numpy()
            scores[r, :n] = 1.0 - found["_distance"].to_numpy()  # Lance's dot distance is 1 - q·x
        return scores, ids

    def ids(self) -> np.ndarray:
        if self.table is None:
            return np.zeros(0, np.int64)
        return self.table.search().select(["pos"]).limit(None).to_arrow()["pos"].to_numpy().astype(np.int64)

    def fetch(self, ids: np.ndarray) -> np.ndarray:
        out = np.zeros((len(ids), self.dim), np.float32)
        if self.table is None or not len(ids):
            return out
        where = {int(p): i for i, p in enumerate(ids)}
        for start in range(0, len(ids), _IN_CHUNK):
            part = self.table.search().where(_in(ids[start : start + _IN_CHUNK])).select(["pos", "vector"])
            found = part.limit(None).to_arrow()
            vecs = found["vector"].combine_chunks().flatten().to_numpy().reshape(-1, self.dim)
            for p, v in zip(found["pos"].to_numpy(), vecs, strict=True):
                out[where[int(p)]] = v
        return out

    def __len__(self) -> int:
        return self._count


class LanceStore(VectorStore):
    kind: ClassVar[str] = "lancedb"

    def __init__(self, uri: str, prefix: str, dim: int, params: Mapping[str, Any] | None = None) -> None:
        self.uri, self.prefix, self.dim = uri, prefix, int(dim)
        self.params = {**DEFAULTS, **(params or {})}
        try:
            self.db = _lancedb().connect(uri)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"lancedb store {uri}: cannot open it ({exc})") from None

    def corpus(self, modality: str) -> LanceCorpus:
        return LanceCorpus(self.db, collection_name(self.prefix, modality), self.dim, self.params)
