"""Representational similarity analysis (Kriegeskorte et al. 2008).

    RSA(A, B) = Spearman ρ( triu(D_A), triu(D_B) ),   D = 1 − cos(xᵢ, xⱼ)

over the strict upper triangle (i < j). Spearman = Pearson of average ranks (ties share a rank).
The triangle has n(n−1)/2 entries, so inputs above ``max_rows`` rows are evenly subsampled
(the same rows on both sides).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.stats import rankdata

from modalign.metrics.base import METRICS, PairMetric, even_rows, normalize_rows


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get the mean of the ranks they span."""
    return rankdata(values, method="average")


def upper_dissimilarities(x: np.ndarray) -> np.ndarray:
    """1 − cos of every row pair i < j, row-major."""
    z = normalize_rows(np.asarray(x, dtype=np.float64))
    iu = np.triu_indices(len(z), k=1)
    return 1.0 - (z @ z.T)[iu]


@METRICS.register("rsa")
class RSA(PairMetric):
    """Spearman correlation of the two representational dissimilarity matrices, in [−1, 1]."""

    name: ClassVar[str] = "rsa"
    min_rows: ClassVar[int] = 3

    def __init__(self, max_rows: int | None = 2000) -> None:
        self.max_rows = max_rows

    def prepare(self, x: np.ndarray) -> Any:
        d = upper_dissimilarities(x[even_rows(len(x), self.max_rows)])
        r = average_ranks(d)
        r -= r.mean()
        norm = np.linalg.norm(r)
        return r / norm if norm > 0 else np.zeros_like(r)

    def compare(self, a: Any, b: Any) -> float:
        return float(np.clip(np.dot(a, b), -1.0, 1.0))
