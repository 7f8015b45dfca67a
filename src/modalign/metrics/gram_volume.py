"""GRAM volume (Cicchetti et al. 2025) of a tuple of k embeddings of one item.

For unit vectors v₁ … v_k (one per modality) stacked as A = [v₁ … v_k] (d × k):

    G = AᵀA (the k × k matrix of cosines),   Vol = √det G

Vol = 0 when all k vectors coincide (perfect alignment) and 1 when they are orthogonal; for k = 2,
Vol = |sin θ|. The metric is the mean volume over the items; lower is better.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from modalign.metrics.base import METRICS, Metric, as_matrix, normalize_rows


def gram_volumes(*xs: np.ndarray) -> np.ndarray:
    """(n,) volume of each row's tuple; inputs are k arrays of shape (n, d)."""
    a = np.stack([normalize_rows(as_matrix(x)) for x in xs], axis=2)  # (n, d, k)
    g = np.einsum("ndi,ndj->nij", a, a)
    return np.sqrt(np.clip(np.linalg.det(g), 0.0, None))


@METRICS.register("gram_volume")
class GramVolume(Metric):
    name: ClassVar[str] = "gram_volume"
    arity: ClassVar[int | None] = None
    same_space: ClassVar[bool] = True
    higher_is_better: ClassVar[bool] = False
    min_rows: ClassVar[int] = 1

    def score(self, *xs: np.ndarray) -> float:
        return float(np.mean(gram_volumes(*xs)))
