"""``Index``: any-to-any search over an aligned space, in memory or backed by an index folder.

Each modality is its own corpus (one search backend each), which is what makes routing cheap:
``route`` searches only some corpora, ``calibrated`` z-scores each corpus's candidates with exact
per-query score moments (see ``routing.py``), ``raw`` merges them by cosine.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from modalign.errors import ConfigError
from modalign.search.backends import BACKENDS, SearchBackend
from modalign.search.catalog import Catalog, Segment
from modalign.search.corpus import Corpus, DatabaseCorpora
from modalign.search.hit import Hit
from modalign.search.ingest import IngestReport, Progress, plan_dataset
from modalign.search.query import QueryError, embed_query
from modalign.search.rerank import rerank
from modalign.search.routing import CorpusStats, Ranked, check_routing, merge
from modalign.search.routing import target_modalities as pick_targets
from modalign.search.shared import SharedVectors
from modalign.search.sources import SourceResolver
from modalign.search.stats_sums import RunningSums
from modalign.search.store import IndexStore
from modalign.search.stores import ExternalCorpus, LocalStore, VectorStore, open_store

log = logging.getLogger(__name__)

MAX_K = 10_000
#: text-query embeddings kept (LRU)
QUERY_CACHE = 2048


class Index(DatabaseCorpora, SharedVectors):
    def __init__(self, dim: int, backend: str = "exact", backend_params: Mapping[str, Any] | None = None,
                 model: Any = None, store: VectorStore | None = None) -> None:
        BACKENDS.get(backend)  # a clear error for an unknown name
        self.dim = int(dim)
        self.vstore = store or LocalStore(dim, backend, backend_params)
        self._sums: dict[str, RunningSums] = {}
        self._pending: tuple[int, np.ndarray] | None = None  # (first position, vectors) of the add underway
        self.backend = backend
        self.backend_params = dict(backend_params or {})
        self.model = model
        self.catalog = Catalog()
        self.corpora: dict[str, Corpus] = {}
        self._vectors = np.zeros((0, self.dim), np.float32)
        self._alive = np.zeros(0, dtype=bool)
        self._store: IndexStore | None = None
        self._writable = False
        self.sources = SourceResolver()
        # hand-kept LRU (not functools.lru_cache): one per index instance under its own lock; lru_cache on a
        # method keys on self and keeps every index it ever saw alive
        self._query_cache: OrderedDict[tuple[str | None, str], tuple[str | None, np.ndarray]] = OrderedDict()
        self._query_lock = threading.Lock()
        self._modalities: list[str] | None = None

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_vectors(cls, vectors: Mapping[str, np.ndarray], backend: str = "exact",
                     backend_params: Mapping[str, Any] | None = None,
                     texts: Mapping[str, Sequence[str | None]] | None = None) -> Index:
        """An in-memory index of ready embeddings, one array per modality (ids ``<modality>-<i>``)."""
        dims = {np.shape(v)[1] for v in vectors.values()}
        if len(dims) != 1:
            raise ValueError(f"every modality needs the same dimension, got {sorted(dims)}")
        index = cls(dims.pop(), backend, backend_params)
        entries, rows, parts = [], [], []
        for m, arr in vectors.items():
            arr = np.asarray(arr, np.float32)
            parts.append(arr / np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12))
            for i in range(len(arr)):
                entry_id = f"{m}-{i}"
                text = texts[m][i] if texts and m in texts else None
                entries.append({"id": entry_id, "modality": m, "kind": "vector", "key": entry_id, "text": text,
                                "path": None})
                rows.append({"id": entry_id, "meta": {}, "items": {m: entry_id}})
        index.apply(Segment(entries=entries, vectors=np.concatenate(parts), rows=rows))
        return index

    @classmethod
    def open(cls, folder: str | Path, data_root: str | Path | None = None, shared: str | Path | None = None,
             trust_code: bool = False) -> Index:
        """Load an index folder for searching (no lock: writers only ever add files and swap index.json).

        ``data_root``: the folder the items' relative source paths resolve against, for a dataset that
        moved since it was indexed (default: where it was, else where it is from the index; sources.py).
        ``shared``: a folder another process filled with :meth:`share` from this same index; its vectors
        are memory-mapped instead of read (``shared.py``).
        ``trust_code``: let the index's model load an encoder that runs code (``AlignedModel.load``).
        """
        return cls._load(IndexStore(folder), data_root, None if shared is None else Path(shared), trust_code)

    @classmethod
    @contextlib.contextmanager
    def edit(cls, folder: str | Path, model: Any = None, backend: str | None = None,
             backend_params: Mapping[str, Any] | None = None,
             store: Mapping[str, Any] | None = None, trust_code: bool = False) -> Iterator[Index]:
        """Open ``folder`` for changes under the writer lock, creating it (with ``model``) when new.

        ``backend`` (default ``exact``) and ``store`` (a ``stores.new_store_record``; default local) only
        apply to a new index; an existing one keeps its own.
        """
        wanted = dict(store) if store else None
        from modalign.search.store import model_fingerprint

        if not IndexStore.exists(folder):
            if model is None:
                raise ConfigError(f"{folder}: no index here (give a model to create one)")
            name = backend or "exact"
            BACKENDS.get(name)
            IndexStore.create(folder, model, name, dict(backend_params or {}), wanted)
        folder_store = IndexStore(folder)
        with folder_store.locked():
            store = folder_store  # type: ignore[assignment]
            if model is not None and model_fingerprint(model) != store.manifest.model_fingerprint:
                raise ConfigError(f"{folder}: this index was built with a different model; "
                                  "index into a new folder (or delete this one) to use this model")
            if backend is not None and backend != store.manifest.backend:
                raise ConfigError(f"{folder}: this index uses the {store.manifest.backend!r} backend, not "
                                  f"{backend!r}; index into a new folder to change it")
            kind = folder_store.manifest.store.get("kind", "local")
            if wanted is not None and wanted["kind"] != kind:
                raise ConfigError(f"{folder}: this index keeps its vectors in the {kind!r} store, not "
                                  f"{wanted['kind']!r}; index into a new folder to change it")
            index = cls._load(folder_store, trust_code=trust_code)
            index._writable = True
            index._tidy_store()
            try:
                yield index
            finally:
                index._writable = False

    @classmethod
    def _load(cls, store: IndexStore, data_root: str | Path | None = None, shared: Path | None = None,
              trust_code: bool = False) -> Index:
        man = store.manifest
        model = store.load_model(trust_code)  # first: a model naming code is refused before anything else opens
        vstore = open_store(man.store, store.folder, man.dim, man.backend, man.backend_params)
        index = cls(man.dim, man.backend, man.backend_params, model=model, store=vstore)
        index._store = store
        if vstore.durable:
            index._sums = RunningSums.load(store.load_stats())
        index.sources = SourceResolver(store.folder, data_root)
        parts = []
        mapped_from = None if vstore.durable else shared  # a database store keeps its vectors out of the process
        for segment in store.segments(with_vectors=mapped_from is None):
            index.catalog.apply(segment)
            if segment.vectors is not None:
                parts.append(segment.vectors)
        index._vectors = np.concatenate(parts) if parts else np.zeros((0, man.dim), np.float32)
        # exact corpora come filled from the shared folder (their vectors and statistics): nothing to add
        if mapped_from is not None:
            index.corpora.update(index._map_shared(mapped_from))
        index._alive = index.catalog.alive_mask()
        for m in index.catalog.modalities():
            corpus = index._corpus(m)
            path = store.ann_path(m) if corpus.backend.persistent else None
            if isinstance(corpus.backend, ExternalCorpus):
                index._attach(m, corpus)
            elif path is not None:
                try:
                    corpus.backend.load(path)
                    held = corpus.backend.ids()
                    if len(held) and held.max() >= len(index.catalog):
                        raise ValueError("it refers to entries the index does not have")
                    corpus.held = np.zeros(len(index.catalog), bool)
                    corpus.held[held] = True
                except (RuntimeError, ValueError) as exc:
                    log.warning("%s: rebuilding the %s search structure (%s)", path, m, exc)
                    index.corpora[m] = Corpus(index._new_backend(m))
            index._sync(m)
        return index

    def _generation(self) -> int:
        return self._store.manifest.generation if self._store is not None else 0

    def _new_backend(self, modality: str) -> SearchBackend:
        return self.vstore.corpus(modality)

    def _corpus(self, modality: str) -> Corpus:
        if modality not in self.corpora:
            self.corpora[modality] = Corpus(self._new_backend(modality))
        return self.corpora[modality]

    # ---------------------------------------------------------------- changes
    def apply(self, segment: Segment) -> None:
        """Apply one change in memory and, for an index folder, write it and commit."""
        if self._store is not None and not self._writable:
            raise ConfigError("this index was opened read-only; use Index.edit(folder) to change it")
        if segment.is_empty():
            return
        durable = self.vstore.durable
        record = self._store.write_segment(segment, with_vectors=not durable) if self._store is not None else None
        if durable:
            self._store_add(segment)
        touched = self.catalog.apply(segment)
        if segment.vectors is not None and len(segment.vectors) and not durable:
            self._vectors = np.concatenate([self._vectors, np.asarray(segment.vectors, np.float32)])
        self._alive = self.catalog.alive_mask()
        modalities = {self.catalog.modality[p] for p in touched}
        try:
            for m in modalities:
                self._sync(m)
        finally:
            self._pending = None
        if self._store is not None and record is not None:
            self._commit([*self._store.manifest.segments, record], modalities)
        if durable:  # deleted only once the commit no longer lists them (a crash before leaves them hidden)
            for m in modalities:
                self._drop_stale(self.corpora[m])

    def _commit(self, segments: list[Any], modalities: set[str], rebuild_ann: bool = False) -> None:
        assert self._store is not None
        generation = self._store.manifest.generation + 1
        ann = dict(self._store.manifest.ann)
        for m, corpus in self.corpora.items():
            if corpus.backend.persistent and (m in modalities or rebuild_ann or m not in ann) and len(corpus.backend):
                ann[m] = self._store.write_ann(m, corpus.backend, generation)
        stats = self._store.write_stats(RunningSums.dump(self._sums), generation) if self.vstore.durable else None
        self._store.commit(segments, ann, generation, stats)

    def _sync(self, modality: str) -> None:
        """Make the modality's backend hold exactly its alive entries (or a superset, see HNSW)."""
        corpus = self._corpus(modality)
        n = len(self.catalog)
        held = np.zeros(n, bool)
        held[: len(corpus.held)] = corpus.held[:n]
        of_modality = np.fromiter((m == modality for m in self.catalog.modality), bool, count=n)
        want = of_modality & self._alive
        if self.vstore.durable:
            self._sync_sums(modality, corpus, want)
            missing = int(np.count_nonzero(want & ~held))
            if missing:  # cannot happen through apply (vectors go in first); a store edited by hand
                log.warning("%s: %d item(s) of the catalog are missing from the store", modality, missing)
        else:
            add = np.flatnonzero(want & ~held)
            if len(add):
                corpus.backend.add(self._vectors[add], add)
                held[add] = True
            stale = np.flatnonzero(held & ~want)
            if len(stale) and corpus.backend.removes:
                corpus.backend.remove(stale)
                held[stale] = False
            if corpus.stats is None or corpus.stats_of is None or not np.array_equal(corpus.stats_of, want):
                corpus.stats = CorpusStats.from_vectors(self._vectors[want])
                corpus.stats_of = want
        corpus.held = held
        corpus.n_stale = int(np.count_nonzero(held & ~want))
        corpus.n_alive = int(np.count_nonzero(want))
        self._modalities = None

    def add_dataset(self, dataset: Any, cache: Any = None, modalities: Sequence[str] | None = None,
                    progress: Progress | None = None) -> IngestReport:
        """Embed and add the rows of a ``PairedDataset`` (only items not indexed yet are embedded)."""
        if self.model is None:
            raise ConfigError("this index has no model to embed a dataset with")
        folder = self._store.folder if self._store is not None else None
        segment, report = plan_dataset(self.catalog, self.model, dataset, cache, modalities, progress, folder)
        self.apply(segment)
        return report

    def delete(self, ids: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
        """Delete rows (by manifest id) or single entries (by item id); returns (rows, entries, unknown)."""
        rows, entries, unknown = self.catalog.resolve(ids)
        self.apply(Segment(deleted_rows=rows, deleted_entries=entries))
        return rows, entries, unknown

    def compact(self) -> None:
        """Rewrite the index as one segment of alive entries (drops deleted vectors, rebuilds ANN)."""
        if self.vstore.durable:
            raise ConfigError(f"--compact rewrites local indexes; the {self.vstore.kind} store already dropped "
                              "the deleted vectors")
        keep = np.flatnonzero(self._alive)
        cat = self.catalog
        entries = [cat.entry(p) for p in keep]
        rows = [{"id": r, "meta": row["meta"], "items": {m: cat.entry_ids[p] for m, p in row["items"].items()}}
                for r, row in cat.rows.items()]
        segment = Segment(entries=entries, vectors=self._vectors[keep], rows=rows)
        record = self._store.write_segment(segment, self._store.next_segment_name()) if self._store else None
        self.catalog, self.corpora = Catalog(), {}
        self._vectors, self._alive = np.zeros((0, self.dim), np.float32), np.zeros(0, bool)
        self.catalog.apply(segment)
        self._vectors = np.asarray(segment.vectors, np.float32).reshape(-1, self.dim)
        self._alive = self.catalog.alive_mask()
        for m in self.catalog.modalities():
            self._sync(m)
        if self._store is not None and record is not None:
            self._commit([record], set(self.corpora), rebuild_ann=True)

    def close(self) -> None:
        """Release the store's connections (a database-backed index)."""
        self.vstore.close()

    # ---------------------------------------------------------------- reading
    @property
    def modalities(self) -> list[str]:
        """Modalities with at least one live item (model order)."""
        if self._modalities is None:
            order = self.model.modalities if self.model is not None else list(self.corpora)
            self._modalities = [m for m in order if m in self.corpora and self.corpora[m].n_alive]
        return self._modalities

    def __len__(self) -> int:
        return int(np.count_nonzero(self._alive))

    def counts(self) -> dict[str, int]:
        return {m: self.corpora[m].n_alive for m in self.modalities}

    def position(self, entry_id: str) -> int:
        pos = self.catalog.position.get(entry_id)
        if pos is None or not self._alive[pos]:
            raise KeyError(f"no item {entry_id!r} in the index")
        return pos

    def item(self, entry_id: str) -> Hit:
        pos = self.position(entry_id)
        return self._hit(pos, float("nan"), float("nan"))

    def vector(self, entry_id: str) -> np.ndarray:
        pos = self.position(entry_id)
        backend = self.corpora[self.catalog.modality[pos]].backend
        if isinstance(backend, ExternalCorpus):
            return backend.fetch(np.asarray([pos], np.int64))[0]
        return self._vectors[pos].copy()

    def vectors(self, entry_ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of ``entry_ids`` as one (n, dim) float32 array: one fetch per modality, not per item."""
        pos = np.fromiter((self.position(i) for i in entry_ids), np.int64, count=len(entry_ids))
        out = np.empty((len(pos), self.dim), np.float32)
        modality = np.asarray([self.catalog.modality[p] for p in pos], dtype=object)
        for m in dict.fromkeys(modality.tolist()):
            sel = np.flatnonzero(modality == m)
            backend = self.corpora[m].backend
            out[sel] = backend.fetch(pos[sel]) if isinstance(backend, ExternalCorpus) else self._vectors[pos[sel]]
        return out

    def _hit(self, pos: int, score: float, cosine: float) -> Hit:
        cat = self.catalog
        return Hit(id=cat.entry_ids[pos], modality=cat.modality[pos], kind=cat.kind[pos], score=score, cosine=cosine,
                   text=cat.caption(pos), path=self.source_path(pos), rows=cat.rows_of(pos), meta=cat.meta(pos),
                   source=cat.path[pos])

    def open_source(self, entry_id: str) -> BinaryIO:
        """The entry's source file, opened safely (``sources.open_inside``): FileNotFoundError when it is
        missing, ``SourceRefused`` when it is a link out of its folder or not a regular file."""
        pos = self.position(entry_id)
        root = self.catalog.root[pos]
        return self.sources.open(self.catalog.path[pos], *(root or (None, None)))

    def source_path(self, pos: int) -> str | None:
        """The source file of the entry at ``pos`` (absolute; it may be missing), None for text and vectors."""
        root = self.catalog.root[pos]
        return self.sources.resolve(self.catalog.path[pos], *(root or (None, None)))

    # ---------------------------------------------------------------- search
    def embed_query(self, query: Any, modality: str | None = None) -> tuple[str | None, np.ndarray]:
        if not isinstance(query, str):
            return embed_query(self.model, query, modality, self.dim)
        # text queries repeat (popular searches, paging, filter changes): keep their embeddings
        hit = self.cached_text(query, modality)
        if hit is not None:
            return hit
        found = embed_query(self.model, query, modality, self.dim)
        self.cache_text(query, modality, found)
        return found[0], found[1].copy()

    def cached_text(self, text: str, modality: str | None) -> tuple[str | None, np.ndarray] | None:
        """The remembered (query modality, embedding) of a text query, or None (the server's batches look here)."""
        key = (modality, text)
        with self._query_lock:
            hit = self._query_cache.get(key)
            if hit is None:
                return None
            self._query_cache.move_to_end(key)
            return hit[0], hit[1].copy()

    def cache_text(self, text: str, modality: str | None, found: tuple[str | None, np.ndarray]) -> None:
        with self._query_lock:
            self._query_cache[(modality, text)] = (found[0], found[1].copy())
            while len(self._query_cache) > QUERY_CACHE:
                self._query_cache.popitem(last=False)

    def search(self, query: Any, modality: str | None = None, k: int = 10,
               target_modalities: Sequence[str] | None = None, routing: str = "calibrated",
               adaptive: float | None = None) -> list[Hit]:
        """Top-k items for one query: text, image (path/PIL/bytes), audio path/bytes, an item id's vector
        (``query=index.vector(id)``) or any embedding. ``modality`` names the query's modality."""
        query_modality, vec = self.embed_query(query, modality)
        return self.search_embeddings(vec[None], k, target_modalities, routing, adaptive, query_modality)[0]

    def search_embeddings(self, queries: np.ndarray, k: int = 10, target_modalities: Sequence[str] | None = None,
                          routing: str = "calibrated", adaptive: float | None = None,
                          query_modality: str | None = None) -> list[list[Hit]]:
        ranked = self.rank(queries, k, target_modalities, routing, adaptive, query_modality)
        return [[self._hit(int(p), float(s), float(c)) for p, s, c in zip(r.ids, r.scores, r.cosines, strict=True)]
                for r in ranked]

    def rank(self, queries: np.ndarray, k: int = 10, target_modalities: Sequence[str] | None = None,
             routing: str = "calibrated", adaptive: float | None = None,
             query_modality: str | None = None) -> list[Ranked]:
        """The search itself on (q, dim) embeddings: global positions and scores, no metadata."""
        check_routing(routing)
        if not 1 <= int(k) <= MAX_K:
            raise QueryError(f"k must be between 1 and {MAX_K}, got {k}")
        if adaptive is not None and not adaptive >= 0:
            raise QueryError(f"adaptive δ must be ≥ 0, got {adaptive}")
        q = np.asarray(queries, dtype=np.float32)  # normalised out of place: the caller's array stays as it was
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise QueryError(f"queries must have {self.dim} dimensions, got shape {np.shape(queries)}")
        if len(q) == 1:  # the serving case: scalar checks, and no copy for an already unit query
            norm = float(np.sqrt(np.dot(q[0], q[0])))
            if not norm:
                raise QueryError("a query embedding is all zeros")
            if abs(norm - 1.0) > 1e-6:
                q = q * np.float32(1.0 / norm)
        else:
            sq_norms = np.einsum("ij,ij->i", q, q)
            if not sq_norms.all():
                raise QueryError("a query embedding is all zeros")
            q = q / np.sqrt(sq_norms)[:, None]
        try:
            targets = pick_targets(routing, self.modalities, query_modality, target_modalities)
        except ValueError as exc:
            raise QueryError(str(exc)) from None
        per_corpus: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        moments: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for m in targets:
            corpus = self.corpora[m]
            if corpus.backend.rerank > 1:  # approximate scores: re-score the candidates exactly
                _, found = corpus.backend.search(q, k * corpus.backend.rerank + corpus.n_stale)
                scores, ids = rerank(q, found, self._vectors, k, self._alive)
            else:
                scores, ids = corpus.backend.search(q, k + corpus.n_stale)
            # faiss pads rows with -1 at the end when a corpus has fewer than k items left
            if corpus.n_stale or (ids.shape[1] and (ids[0, -1] < 0 if len(ids) == 1 else ids[:, -1].min() < 0)):
                scores, ids = self._drop_dead(scores, ids, k)
            per_corpus[m] = (scores, ids)
            if routing == "calibrated":
                assert corpus.stats is not None
                moments[m] = corpus.stats.moments(q)
        if len(targets) == 1 and routing != "calibrated" and adaptive is None:
            # one corpus ranked by cosine: its backend's order is the answer (the common, fast path)
            m = targets[0]
            scores, ids = per_corpus[m]
            out = []
            for i in range(len(q)):
                s, p = _valid(scores[i], ids[i])
                out.append(Ranked(p, [m] * len(p), s, s))
            return out
        return [merge({m: _valid(s[i], ids[i]) for m, (s, ids) in per_corpus.items()}, routing, k,
                      {m: (mu[i], sd[i]) for m, (mu, sd) in moments.items()}, adaptive) for i in range(len(q))]

    def _drop_dead(self, scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Drop padding (-1) and deleted-but-still-held ids, keeping each row's best k."""
        out_s = np.full((len(ids), k), -np.inf, np.float32)
        out_i = np.full((len(ids), k), -1, np.int64)
        valid = (ids >= 0) & self._alive[np.clip(ids, 0, None)]
        width = 0
        for r in range(len(ids)):
            keep = np.flatnonzero(valid[r])[:k]
            out_s[r, : len(keep)], out_i[r, : len(keep)] = scores[r, keep], ids[r, keep]
            width = max(width, len(keep))
        return out_s[:, :width], out_i[:, :width]


def _valid(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Without the -1 padding of a corpus with fewer than k live items."""
    if len(ids) and ids[-1] < 0:
        keep = ids >= 0
        return scores[keep], ids[keep]
    return scores, ids
