"""Mutual k-nearest-neighbour alignment (Huh et al. 2024): (1/N) Σ_i |kNN_A(i) ∩ kNN_B(i)| / k."""

from __future__ import annotations

import math

import numpy as np


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


def mutual_knn(a: np.ndarray, b: np.ndarray, k: int | None = None) -> float:
    """Share of each row's k nearest neighbours that the two spaces agree on (1 = identical)."""
    if len(a) != len(b):
        raise ValueError(f"mutual_knn needs paired rows, got {len(a)} and {len(b)}")
    n = len(a)
    if n < 2:
        raise ValueError("mutual_knn needs at least 2 rows")
    k = rice_k(n) if k is None else int(k)
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}], got {k}")
    na, nb = knn_indices(a, k), knn_indices(b, k)
    mask_a = np.zeros((n, n), dtype=bool)
    np.put_along_axis(mask_a, na, True, axis=1)
    overlap = np.take_along_axis(mask_a, nb, axis=1).sum(axis=1)
    return float(np.mean(overlap / k))
