"""Mutual k-nearest-neighbour alignment (Huh et al. 2024).

    mKNN(A, B) = (1/N) Σ_i |kNN_A(i) ∩ kNN_B(i)| / k

kNN by cosine similarity with the item itself excluded; k by the Rice rule ⌈2·n^(1/3)⌉ unless given.
1 means both spaces agree on every neighbourhood; chance is about k/(n−1).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from modalign.metrics.base import METRICS, PairMetric


def rice_k(n: int) -> int:
    """Rice rule ⌈2·n^(1/3)⌉, capped at n − 1."""
    return max(1, min(n - 1, math.ceil(2 * n ** (1 / 3))))


def knn_indices(x: np.ndarray, k: int) -> np.ndarray:
    """(N, k) indices of each row's k nearest rows by cosine similarity, self excluded."""
    x = np.asarray(x, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    idx = np.argpartition(-sim, kth=k - 1, axis=1)[:, :k]
    return idx


def knn_overlap(na: np.ndarray, nb: np.ndarray) -> float:
    """Mean share of shared neighbours between two (N, k) neighbour lists."""
    n, k = na.shape
    mask_a = np.zeros((n, n), dtype=bool)
    np.put_along_axis(mask_a, na, True, axis=1)
    overlap = np.take_along_axis(mask_a, nb, axis=1).sum(axis=1)
    return float(np.mean(overlap / k))


def _check_k(n: int, k: int | None) -> int:
    if n < 2:
        raise ValueError("mutual_knn needs at least 2 rows")
    k = rice_k(n) if k is None else int(k)
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}], got {k}")
    return k


def mutual_knn(a: np.ndarray, b: np.ndarray, k: int | None = None) -> float:
    """Share of each row's k nearest neighbours that the two spaces agree on (1 = identical)."""
    if len(a) != len(b):
        raise ValueError(f"mutual_knn needs paired rows, got {len(a)} and {len(b)}")
    k = _check_k(len(a), k)
    return knn_overlap(knn_indices(a, k), knn_indices(b, k))


@METRICS.register("mutual_knn")
class MutualKNN(PairMetric):
    """Mutual-kNN overlap; the measure ``fit --layers auto`` maximises."""

    name: ClassVar[str] = "mutual_knn"

    def __init__(self, k: int | None = None) -> None:
        self.k = k

    def prepare(self, x: np.ndarray) -> Any:
        return knn_indices(x, _check_k(len(x), self.k))

    def compare(self, a: Any, b: Any) -> float:
        return knn_overlap(a, b)
