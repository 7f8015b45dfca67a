"""A corpus (one modality's search backend) and what an index does for corpora kept in a database.

``DatabaseCorpora`` is the part of :class:`~modalign.search.index.Index` for ``lancedb`` / ``milvus``
stores (``stores/``): vectors go into the database before the commit that lists them, deletions after
it, and the calibration statistics are running sums instead of a pass over vectors held in memory.
"""

from __future__ import annotations

import logging

import numpy as np

from modalign.search.backends import SearchBackend
from modalign.search.catalog import Catalog, Segment
from modalign.search.routing import CorpusStats
from modalign.search.stats_sums import RunningSums
from modalign.search.stores import ExternalCorpus

log = logging.getLogger(__name__)


class Corpus:
    """One modality's vectors in a backend, which positions the backend holds, and score statistics."""

    def __init__(self, backend: SearchBackend) -> None:
        self.backend = backend
        self.held = np.zeros(0, dtype=bool)  # position -> in the backend
        self.n_stale = 0  # held but no longer alive (backends that cannot remove)
        self.n_alive = 0
        self.stats: CorpusStats | None = None
        self.stats_of: np.ndarray | None = None  # the positions ``stats`` was computed over
        self.counted = np.zeros(0, dtype=bool)  # positions in the running sums (database stores)


class DatabaseCorpora:
    """Mixed into ``Index``: the attributes below are the index's own."""

    dim: int
    catalog: Catalog
    corpora: dict[str, Corpus]
    _alive: np.ndarray
    _sums: dict[str, RunningSums]
    _pending: tuple[int, np.ndarray] | None

    def _corpus(self, modality: str) -> Corpus:  # Index's: the modality's corpus, created when new
        raise NotImplementedError

    def _attach(self, modality: str, corpus: Corpus) -> None:
        """What a database corpus holds; rows past the catalog (a writer killed before its commit) are hidden."""
        assert isinstance(corpus.backend, ExternalCorpus)
        n = len(self.catalog)
        held = corpus.backend.ids()
        if len(held) and held.max() >= n:
            log.warning("%s: %d uncommitted vector(s) in the store are ignored", modality, int((held >= n).sum()))
            corpus.backend.hide_from(n)
        corpus.held = np.zeros(n, bool)
        corpus.held[held[held < n]] = True
        of_modality = np.fromiter((m == modality for m in self.catalog.modality), bool, count=n)
        corpus.counted = of_modality & self._alive  # the stats file was written with this catalog
        self._sums.setdefault(modality, RunningSums.empty(self.dim))

    def _tidy_store(self) -> None:
        """Under the writer lock: drop what the database holds past the catalog or no longer alive."""
        for corpus in self.corpora.values():
            if isinstance(corpus.backend, ExternalCorpus):
                if corpus.backend.limit is not None:
                    extra = corpus.backend.ids()
                    corpus.backend.remove(extra[extra >= corpus.backend.limit])
                    corpus.backend.hide_from(None)
                self._drop_stale(corpus)

    def _drop_stale(self, corpus: Corpus) -> None:
        stale = np.flatnonzero(corpus.held & ~self._alive[: len(corpus.held)])
        if len(stale):
            corpus.backend.remove(stale.astype(np.int64))
            corpus.held[stale] = False
        corpus.n_stale = 0

    def _store_add(self, segment: Segment) -> None:
        """Insert the segment's vectors into the database before the commit that makes them part of the index."""
        base = len(self.catalog)
        if not segment.entries:
            return
        vectors = np.asarray(segment.vectors, np.float32).reshape(len(segment.entries), self.dim)
        self._pending = (base, vectors)
        by_modality: dict[str, list[int]] = {}
        for i, entry in enumerate(segment.entries):
            by_modality.setdefault(entry["modality"], []).append(i)
        for m, rows in by_modality.items():
            corpus = self._corpus(m)
            meta = [segment.entries[i] for i in rows]
            assert isinstance(corpus.backend, ExternalCorpus)
            corpus.backend.add_items(vectors[rows], np.asarray(rows, np.int64) + base, meta)
            held = np.zeros(base + len(segment.entries), bool)
            held[: len(corpus.held)] = corpus.held
            held[np.asarray(rows) + base] = True
            corpus.held = held

    def _sync_sums(self, modality: str, corpus: Corpus, want: np.ndarray) -> None:
        """Database stores: update the running sums with what joined or left the alive set."""
        counted = np.zeros(len(want), bool)
        counted[: len(corpus.counted)] = corpus.counted[: len(want)]
        sums = self._sums.setdefault(modality, RunningSums.empty(self.dim))
        joined, left = np.flatnonzero(want & ~counted), np.flatnonzero(counted & ~want)
        if len(joined):
            sums.add(self._stored_vectors(corpus, joined))
        if len(left):
            sums.add(self._stored_vectors(corpus, left), sign=-1)
        corpus.counted = want.copy()
        corpus.stats = sums.stats()

    def _stored_vectors(self, corpus: Corpus, positions: np.ndarray) -> np.ndarray:
        if self._pending is not None and positions.min() >= self._pending[0]:
            return self._pending[1][positions - self._pending[0]]
        assert isinstance(corpus.backend, ExternalCorpus)
        return corpus.backend.fetch(positions)
