"""Linear centred kernel alignment (Kornblith et al. 2019), biased and unbiased estimators.

With linear kernels K = XXᵀ, L = YYᵀ and the centring matrix H = I − 11ᵀ/n:

    HSIC(K, L) = tr(KHLH) / (n − 1)²,   CKA = HSIC(K, L) / √(HSIC(K, K) · HSIC(L, L))

For centred features tr(KHLH) = ‖YᵀX‖²_F, so nothing n × n is built. The unbiased estimator
(Song et al. 2012) uses K̃, L̃ = the kernels with their diagonals zeroed:

    HSIC₁ = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3))

with tr(K̃L̃) = ‖XᵀY‖²_F − Σᵢ‖xᵢ‖²‖yᵢ‖² and K̃1 = X(Xᵀ1) − diag(K), again in O(n·d²).
CKA is invariant to orthogonal transforms and isotropic scaling of either input, not to general
invertible linear maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from modalign.metrics.base import METRICS, PairMetric


@dataclass
class _Centred:
    x: np.ndarray  # centred features (n, d)
    sq_norms: np.ndarray  # diag(K) = ‖xᵢ‖²
    k_row_sums: np.ndarray  # K̃1
    self_hsic: float


def _cross_frobenius_sq(x: np.ndarray, y: np.ndarray) -> float:
    """‖XᵀY‖²_F, through the smaller of the d×d or n×n products."""
    if x.shape[1] * y.shape[1] <= x.shape[0] ** 2:
        return float(np.sum((x.T @ y) ** 2))
    return float(np.sum((x @ x.T) * (y @ y.T)))


def _unbiased_hsic(a: _Centred, b: _Centred, cross: float) -> float:
    n = len(a.x)
    trace = cross - float(a.sq_norms @ b.sq_norms)
    sum_a, sum_b = float(a.k_row_sums.sum()), float(b.k_row_sums.sum())
    return (trace + sum_a * sum_b / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(a.k_row_sums @ b.k_row_sums)) / (
        n * (n - 3)
    )


class _LinearCKA(PairMetric):
    unbiased: ClassVar[bool] = False

    def prepare(self, x: np.ndarray) -> Any:
        x = np.asarray(x, dtype=np.float64)
        xc = x - x.mean(axis=0, keepdims=True)
        sq = np.einsum("ij,ij->i", xc, xc)
        state = _Centred(xc, sq, xc @ xc.sum(axis=0) - sq, 0.0)
        cross = _cross_frobenius_sq(xc, xc)
        state.self_hsic = _unbiased_hsic(state, state, cross) if self.unbiased else cross
        return state

    def compare(self, a: Any, b: Any) -> float:
        cross = _cross_frobenius_sq(a.x, b.x)
        num = _unbiased_hsic(a, b, cross) if self.unbiased else cross
        den = a.self_hsic * b.self_hsic
        if den <= 0:  # a constant input has no structure to align with
            return 0.0
        return float(num / np.sqrt(den))


@METRICS.register("cka")
class LinearCKA(_LinearCKA):
    """Biased linear CKA in [0, 1]; inflated when n is small relative to the widths."""

    name: ClassVar[str] = "cka"
    min_rows: ClassVar[int] = 2


@METRICS.register("cka_unbiased")
class UnbiasedLinearCKA(_LinearCKA):
    """Linear CKA on Song et al.'s unbiased HSIC; can dip below 0 for unrelated inputs."""

    name: ClassVar[str] = "cka_unbiased"
    unbiased: ClassVar[bool] = True
    min_rows: ClassVar[int] = 4
