"""One copy of an index's vectors for several server processes: written once, memory-mapped by each.

``modalign serve --workers N`` opens the index once and calls :meth:`SharedVectors.share`: every vector
of the index (what item fetches and re-ranking read) and each exact corpus's matrix, ids and score
statistics go into ``.npy`` files in a private folder. Each worker then opens the index with
``Index.open(folder, shared=that_folder)``: it reads the catalog from the index folder as usual, but maps
those files copy-on-write instead of reading the segments' vectors into memory, so N workers hold the
vectors once, in the page cache. Nothing ever writes to a mapping: a change to an exact backend builds a
new array.

Only exact corpora of a local index are shared. faiss structures (``--ann``) are loaded by each
process from their own files, and LanceDB / Milvus stores keep their vectors out of the process anyway.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from modalign.errors import ConfigError
from modalign.search.backends.exact import ExactBackend
from modalign.search.catalog import Catalog
from modalign.search.corpus import Corpus
from modalign.search.routing import CorpusStats

SHARED_FILE = "shared.json"
FORMAT = "modalign.shared-vectors"


class SharedLayout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str
    generation: int
    entries: int
    dim: int
    corpora: dict[str, str]  # modality -> file stem of its matrix, ids and statistics


class SharedVectors:
    """Mixed into ``Index``: the attributes below are the index's own."""

    dim: int
    catalog: Catalog
    corpora: dict[str, Corpus]
    _vectors: np.ndarray
    #: the folder this index's vectors are mapped from, when they are
    shared_from: Path | None = None

    def _generation(self) -> int:  # Index's: the generation of the index folder it was opened from
        raise NotImplementedError

    def share(self, folder: str | Path) -> None:
        """Write this index's vectors into ``folder`` (existing, private) for workers to map."""
        out = Path(folder)
        corpora: dict[str, str] = {}
        np.save(out / "vectors.npy", np.ascontiguousarray(self._vectors, np.float32), allow_pickle=False)
        for i, (modality, corpus) in enumerate(self.corpora.items()):
            backend = corpus.backend
            if not isinstance(backend, ExactBackend) or corpus.stats is None:
                continue
            stem = corpora[modality] = f"corpus-{i}"
            matrix, ids = backend.arrays()
            np.save(out / f"{stem}.vectors.npy", matrix, allow_pickle=False)
            np.save(out / f"{stem}.ids.npy", ids, allow_pickle=False)
            np.save(out / f"{stem}.mean.npy", corpus.stats.mean, allow_pickle=False)
            np.save(out / f"{stem}.cov.npy", corpus.stats.cov, allow_pickle=False)
        layout = SharedLayout(format=FORMAT, generation=self._generation(), entries=len(self.catalog), dim=self.dim,
                              corpora=corpora)
        (out / SHARED_FILE).write_text(layout.model_dump_json(indent=1), encoding="utf-8")

    def _map_shared(self, folder: Path) -> dict[str, Corpus]:
        """Map ``folder``'s vectors as this index's; returns the exact corpora they fill (not yet synced)."""
        layout = self._shared_layout(folder)
        self.shared_from = folder
        self._vectors = self._mapped(folder / "vectors.npy", (layout.entries, self.dim))
        filled: dict[str, Corpus] = {}
        for modality, stem in layout.corpora.items():
            ids = np.load(folder / f"{stem}.ids.npy", allow_pickle=False)
            if ids.ndim != 1 or ids.dtype != np.int64 or (len(ids) and (ids.min() < 0 or ids.max() >= layout.entries)):
                raise ConfigError(f"{folder}: {stem}.ids.npy is not a list of this index's entries")
            corpus = Corpus(ExactBackend(self.dim))
            corpus.backend.adopt(self._mapped(folder / f"{stem}.vectors.npy", (len(ids), self.dim)), ids)
            corpus.held = np.zeros(layout.entries, bool)
            corpus.held[ids] = True
            mean = np.load(folder / f"{stem}.mean.npy", allow_pickle=False)
            cov = np.load(folder / f"{stem}.cov.npy", allow_pickle=False)
            corpus.stats = CorpusStats(len(ids), mean, cov)
            corpus.stats_of = corpus.held.copy()  # an exact corpus holds exactly the entries its stats cover
            filled[modality] = corpus
        return filled

    def _shared_layout(self, folder: Path) -> SharedLayout:
        try:
            layout = SharedLayout.model_validate(json.loads((folder / SHARED_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError, ValidationError) as exc:
            raise ConfigError(f"{folder / SHARED_FILE}: not a shared-vectors folder ({type(exc).__name__})") from None
        if layout.format != FORMAT or layout.dim != self.dim:
            raise ConfigError(f"{folder / SHARED_FILE}: written for another index")
        if layout.generation != self._generation() or layout.entries != len(self.catalog):
            raise ConfigError(f"the index changed since its vectors were shared (generation {layout.generation} -> "
                              f"{self._generation()}); restart the server to serve the new one")
        return layout

    @staticmethod
    def _mapped(path: Path, shape: tuple[int, int]) -> np.ndarray:
        # copy-on-write: a writeable array (torch.from_numpy takes it without a warning) whose pages stay
        # shared with every other process, because nothing writes to them
        array = np.load(path, mmap_mode="c", allow_pickle=False)
        if array.shape != shape or array.dtype != np.float32:
            raise ConfigError(f"{path}: expected float32 {shape}, found {array.dtype} {array.shape}")
        return array
