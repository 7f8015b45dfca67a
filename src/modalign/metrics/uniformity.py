"""Uniformity (Wang & Isola 2020): how evenly one set of embeddings covers the unit sphere.

    unif(Z) = log E_{i<j} exp(−t ‖ẑ_i − ẑ_j‖²),   t = 2,  ẑ = z / ‖z‖

Computed as a log-sum-exp over all pairs i < j (for unit vectors ‖ẑ_i − ẑ_j‖² = 2 − 2 ẑ_i·ẑ_j);
above ``max_rows`` rows an even subsample is used. More negative = more uniform (−4 is the bound
for t = 2); 0 = collapsed onto one point.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from modalign.metrics.base import METRICS, Metric, even_rows, normalize_rows


@METRICS.register("uniformity")
class Uniformity(Metric):
    name: ClassVar[str] = "uniformity"
    arity: ClassVar[int | None] = 1
    higher_is_better: ClassVar[bool] = False

    def __init__(self, t: float = 2.0, max_rows: int | None = 5000) -> None:
        self.t = t
        self.max_rows = max_rows

    def score(self, *xs: np.ndarray) -> float:
        (x,) = xs
        z = normalize_rows(x[even_rows(len(x), self.max_rows)])
        iu = np.triu_indices(len(z), k=1)
        sq = np.maximum(2.0 - 2.0 * (z @ z.T)[iu], 0.0)
        v = -self.t * sq
        top = v.max()
        return float(top + np.log(np.mean(np.exp(v - top))))
