"""faiss inverted file (``--ann ivf``): k-means cells, ``nprobe`` of them scanned per query.

The coarse quantizer is trained on the first batch added; later additions reuse it (re-run with
``--compact`` after the corpus has grown many times over to retrain).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from modalign.search.backends.faiss_base import FaissBackend, _faiss
from modalign.search.backends.registry import BACKENDS

#: faiss wants ≥ 39 training points per centroid
MIN_POINTS_PER_CELL = 39
MAX_TRAIN = 256 * 1024


def default_nlist(n: int) -> int:
    return max(1, min(int(4 * math.sqrt(max(n, 1))), n // MIN_POINTS_PER_CELL))


@BACKENDS.register("ivf")
class IVFBackend(FaissBackend):
    name = "ivf"

    def __init__(self, dim: int, nlist: int | None = None, nprobe: int = 16, seed: int = 0) -> None:
        super().__init__(dim)
        self.nlist = nlist
        self.nprobe = int(nprobe)
        self.seed = int(seed)
        self._quantizer: Any = None

    def config(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "nprobe": self.nprobe, "seed": self.seed}

    def _new_index(self, first_batch: np.ndarray) -> Any:
        faiss = _faiss()
        nlist = self.nlist or default_nlist(len(first_batch))
        nlist = max(1, min(nlist, len(first_batch)))
        self._quantizer = faiss.IndexFlatIP(self.dim)  # kept referenced: the IVF index borrows it
        index = faiss.IndexIVFFlat(self._quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = self.seed
        rng = np.random.default_rng(self.seed)
        train = first_batch if len(first_batch) <= MAX_TRAIN else first_batch[
            rng.choice(len(first_batch), MAX_TRAIN, replace=False)]
        index.train(np.ascontiguousarray(train))
        return index

    def _apply_search_params(self) -> None:
        self._index.nprobe = max(1, min(self.nprobe, self._index.nlist))

    def ids(self) -> np.ndarray:
        if self._index is None:
            return np.zeros(0, np.int64)
        faiss = _faiss()
        lists = self._index.invlists
        parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                 for i in range(self._index.nlist) if lists.list_size(i)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def remove(self, ids: np.ndarray) -> None:
        if self._index is not None and len(ids):
            self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
