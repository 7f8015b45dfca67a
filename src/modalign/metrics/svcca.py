"""Singular vector canonical correlation analysis (Raghu et al. 2017).

1. Centre each input and keep its top singular directions explaining ``keep_variance`` of the variance
   (this drops noise directions before CCA).
2. With Q_A, Q_B orthonormal bases of the kept subspaces, the canonical correlations are the singular
   values ρ₁ ≥ ρ₂ ≥ … of Q_Aᵀ Q_B (cosines of the principal angles).
3. SVCCA = mean of the min(r_A, r_B) correlations, in [0, 1].

Like every CCA it overfits when the kept dims approach n (every correlation → 1), so at most
n / ``rows_per_dim`` directions are kept (default 5 rows per direction).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from modalign.metrics.base import METRICS, PairMetric


@METRICS.register("svcca")
class SVCCA(PairMetric):
    name: ClassVar[str] = "svcca"
    min_rows: ClassVar[int] = 3

    def __init__(self, keep_variance: float = 0.99, max_dims: int | None = None, rows_per_dim: int = 5) -> None:
        self.keep_variance = keep_variance
        self.max_dims = max_dims
        self.rows_per_dim = rows_per_dim

    def prepare(self, x: np.ndarray) -> Any:
        if not 0 < self.keep_variance <= 1:
            raise ValueError(f"keep_variance must be in (0, 1], got {self.keep_variance}")
        xc = np.asarray(x, dtype=np.float64)
        xc = xc - xc.mean(axis=0, keepdims=True)
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
        var = s**2
        if var.sum() <= 0:
            return u[:, :0]
        r = int(np.searchsorted(np.cumsum(var) / var.sum(), self.keep_variance - 1e-12) + 1)
        r = min(r, int((s > s[0] * 1e-10).sum()))
        if self.max_dims is not None:
            r = min(r, self.max_dims)
        if self.rows_per_dim > 0:
            r = min(r, max(1, len(xc) // self.rows_per_dim))
        return u[:, :r]

    def compare(self, a: Any, b: Any) -> float:
        m = min(a.shape[1], b.shape[1])
        if m == 0:
            return 0.0
        rho = np.linalg.svd(a.T @ b, compute_uv=False)[:m]
        return float(np.mean(np.clip(rho, 0.0, 1.0)))
