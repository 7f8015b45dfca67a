"""faiss IVF-PQ (``--ann ivfpq``): k-means cells + product-quantized residuals, for millions of vectors.

Memory stays bounded: the quantizers are trained on a random sample of at most ``train_size`` rows,
then vectors are added ``chunk`` rows at a time (a memory-mapped input is read chunk by chunk) and
stored as ``m`` bytes each (``nbits`` = 8) instead of 4·dim. Scores are PQ approximations of the
inner product; recall is traded for memory through ``m`` and for speed through ``nprobe``. The index
fetches ``rerank`` × k candidates and re-scores them exactly from its float vectors (0 or 1: off).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from modalign.search.backends.faiss_base import _faiss
from modalign.search.backends.ivf import MIN_POINTS_PER_CELL, IVFBackend, default_nlist
from modalign.search.backends.registry import BACKENDS


def default_m(dim: int) -> int:
    """Sub-quantizers: the largest divisor of ``dim`` up to min(128, dim/2) (≥ 2 dimensions each).

    At 1M × 256 (benchmarks/ivfpq.py) 4-dimensional sub-spaces (64 B) gave recall@10 0.35, 2-dimensional
    ones (128 B, still 8× smaller than float32) 0.71: the codes, not ``nprobe``, limit the recall."""
    cap = max(1, min(128, dim // 2))
    return max(d for d in range(1, cap + 1) if dim % d == 0)


@BACKENDS.register("ivfpq")
class IVFPQBackend(IVFBackend):
    name = "ivfpq"

    def __init__(self, dim: int, nlist: int | None = None, m: int | None = None, nbits: int = 8, nprobe: int = 16,
                 train_size: int = 100_000, chunk: int = 65_536, seed: int = 0, rerank: int = 4) -> None:
        super().__init__(dim, nlist=nlist, nprobe=nprobe, seed=seed)
        self.m = m
        self.nbits = int(nbits)
        self.train_size = int(train_size)
        self.chunk = int(chunk)
        # at 1M × 256 the true top-10 is almost always among the top 40 PQ candidates (docs/scaling.md)
        self.rerank = int(rerank)
        if m is not None and dim % int(m):
            raise ValueError(f"ivfpq: m={m} must divide the dimension {dim}")
        if self.rerank < 0:
            raise ValueError(f"ivfpq: rerank must be ≥ 0 (0 or 1: off), got {rerank}")

    def config(self) -> dict[str, Any]:
        return {**super().config(), "m": self.m, "nbits": self.nbits, "train_size": self.train_size,
                "chunk": self.chunk, "rerank": self.rerank}

    def train(self, sample: np.ndarray, expected: int | None = None) -> None:
        """Train the coarse and product quantizers on ``sample`` (rows of the corpus to come, ≈ ``expected``)."""
        faiss = _faiss()
        sample = np.ascontiguousarray(sample, dtype=np.float32).reshape(-1, self.dim)
        n = len(sample)
        if n == 0:
            raise ValueError("ivfpq: cannot train on an empty sample")
        nlist = self.nlist or default_nlist(expected or n)
        nlist = max(1, min(nlist, n // MIN_POINTS_PER_CELL or 1))
        # 2^nbits codewords per sub-quantizer need enough points; tiny corpora get fewer bits
        nbits = max(1, min(self.nbits, int(math.log2(max(2, n // 4)))))
        self._quantizer = faiss.IndexFlatIP(self.dim)  # kept referenced: the IVF index borrows it
        index = faiss.IndexIVFPQ(self._quantizer, self.dim, nlist, self.m or default_m(self.dim), nbits,
                                 faiss.METRIC_INNER_PRODUCT)
        for cp in (index.cp, index.pq.cp):
            cp.seed = self.seed
            cp.min_points_per_centroid = 1  # nlist/nbits are already sized to the sample: no stderr warnings
        # 128 points per codeword are plenty for 4-8 dimensional sub-spaces; more only slows training down
        index.pq.cp.max_points_per_centroid = 128
        index.train(sample)
        self._index = index
        self._apply_search_params()

    def _new_index(self, first_batch: np.ndarray) -> Any:  # pragma: no cover - ``add`` trains itself
        self.train(first_batch)
        return self._index

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add in chunks; the first call trains on a random sample of ``vectors`` (no full copy is made)."""
        n = len(vectors)
        if n == 0:
            return
        ids = np.asarray(ids, np.int64)
        if self._index is None:
            rng = np.random.default_rng(self.seed)
            pick = np.sort(rng.choice(n, self.train_size, replace=False)) if n > self.train_size else slice(None)
            self.train(np.asarray(vectors[pick]), expected=n)
        for start in range(0, n, self.chunk):
            part = np.ascontiguousarray(vectors[start : start + self.chunk], dtype=np.float32).reshape(-1, self.dim)
            self._index.add_with_ids(part, np.ascontiguousarray(ids[start : start + self.chunk]))

    def code_bytes(self) -> int:
        """Bytes per stored vector (the PQ code), vs 4·dim for exact search."""
        return 0 if self._index is None else int(self._index.code_size)
