"""Running sums behind a corpus's calibration statistics, for stores whose vectors are not in memory.

``calibrated`` routing needs each corpus's mean and covariance (``routing.CorpusStats``). A local index
recomputes them from its vectors; a database-backed one keeps n, Σx and Σxxᵀ (float64) in the index
folder and updates them with each add and delete, so opening an index reads no vector at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modalign.search.routing import CorpusStats


@dataclass
class RunningSums:
    n: int
    total: np.ndarray
    gram: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> RunningSums:
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    def add(self, vectors: np.ndarray, sign: int = 1) -> None:
        v = np.asarray(vectors, np.float64)
        if not len(v):
            return
        self.n += sign * len(v)
        self.total += sign * v.sum(axis=0)
        self.gram += sign * (v.T @ v)

    def stats(self) -> CorpusStats:
        if self.n <= 0:
            return CorpusStats(0, np.zeros(len(self.total)), np.zeros_like(self.gram))
        mean = self.total / self.n
        return CorpusStats(self.n, mean, self.gram / self.n - np.outer(mean, mean))

    @staticmethod
    def dump(sums: dict[str, RunningSums]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for m, s in sums.items():
            out[f"{m}.n"], out[f"{m}.sum"], out[f"{m}.gram"] = np.asarray([s.n], np.int64), s.total, s.gram
        return out

    @staticmethod
    def load(arrays: dict[str, np.ndarray]) -> dict[str, RunningSums]:
        names = {k.rsplit(".", 1)[0] for k in arrays}
        return {m: RunningSums(int(arrays[f"{m}.n"].reshape(-1)[0]), arrays[f"{m}.sum"].astype(np.float64),
                               arrays[f"{m}.gram"].astype(np.float64)) for m in names}
