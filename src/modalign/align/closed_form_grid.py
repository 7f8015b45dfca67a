"""Auto's closed-form grid on one pair of modalities: every candidate from decompositions made once.

``fit_closed_form`` fits one configuration and builds heads. Auto's cross-validation tries some forty
per fold, which differ only in their knobs: CCA's shrinkage (one eigendecomposition of each side's
covariance serves every reg), CCA's power (a rescaling of the canonical directions) and Procrustes'
whitening (its PCA comes from the same eigendecompositions). ``PairGrid`` computes the shared parts of
one fold once and hands out each candidate's projection matrices; the math is that of
``closed_form`` (the refit of the winner goes through ``fit_closed_form``).

With fewer rows than dimensions (a few hundred pairs of 1,280-d image features), each side's covariance
has rank below n: it is decomposed from the n × n gram of the rows instead of the D × D covariance, and
CCA works in that span. This is exact: the shrinkage adds the same multiple of the identity on the rest of
the space, where the cross-covariance is zero, so no canonical direction leaves the span.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg

from modalign.align.closed_form import common_dim, pca_from_gram, power_weights


@dataclass
class PairGrid:
    """Conditioned training rows of two modalities (a, b: n × D_a, n × D_b) and their decompositions."""

    a: np.ndarray
    b: np.ndarray
    dim: int
    _eigh: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    _cca: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.a)
        self.k = common_dim(self.dim, self.a, self.b)
        self.grams = {"a": self.a.T @ self.a / n, "b": self.b.T @ self.b / n}
        self.cross = self.a.T @ self.b / n

    def eigh(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        """(w, v): the covariance's non-zero eigenvalues (ascending) and eigenvectors (D × r); the eigenvalues
        left out are zero."""
        if side not in self._eigh:
            x = self.a if side == "a" else self.b
            n, d = x.shape
            if n < d:  # the row space: eigenpairs of the n × n gram give the covariance's
                w, u = np.linalg.eigh(x @ x.T / n)
                keep = w > 1e-12 * max(float(w.max()), 1e-30)
                w, u = w[keep], u[:, keep]
                self._eigh[side] = (w, x.T @ u / np.sqrt(n * w))
            else:
                self._eigh[side] = tuple(np.linalg.eigh(self.grams[side]))  # type: ignore[assignment]
        return self._eigh[side]

    def matrices(self, method: str, options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(D_a × k, D_b × k) projections of candidate ``method`` with ``options`` (cca or procrustes)."""
        if method == "cca":
            ua, ub, corr = self._directions(float(options.get("reg", 0.1)))
            w = power_weights(corr, float(options.get("power", 1.0)))
            return ua * w, ub * w
        if method == "procrustes":
            pa, sa = pca_from_gram(*self.eigh("a"), len(self.a), self.k)
            pb, sb = pca_from_gram(*self.eigh("b"), len(self.b), self.k)
            if options.get("whiten", True):
                pa, pb = pa / sa, pb / sb
            u, _, vt = np.linalg.svd((self.b @ pb).T @ (self.a @ pa), full_matrices=False)
            return pa, pb @ (u @ vt)
        raise ValueError(f"the closed-form grid has no method {method!r}")

    def _directions(self, reg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CCA with shrinkage ``reg``, as ``cca_directions``, computed in each side's eigenbasis."""
        if reg not in self._cca:
            (wa, va), (wb, vb) = self.eigh("a"), self.eigh("b")
            ia = shrunk_inv_sqrt_diag(wa, self.a.shape[1], reg)
            ib = shrunk_inv_sqrt_diag(wb, self.b.shape[1], reg)
            u, s, vt = robust_svd((va.T @ self.cross @ vb) * ia[:, None] * ib[None, :])
            self._cca[reg] = (va @ (ia[:, None] * u[:, :self.k]), vb @ (ib[:, None] * vt[:self.k].T), s[:self.k])
        return self._cca[reg]


def robust_svd(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD; LAPACK's divide-and-conquer driver (numpy's) can fail to converge on an ill-conditioned
    matrix (seen with one BLAS thread on whisper features), the slower QR-iteration driver then answers."""
    try:
        return tuple(np.linalg.svd(m, full_matrices=False))  # type: ignore[return-value]
    except np.linalg.LinAlgError:
        return tuple(scipy.linalg.svd(m, full_matrices=False, lapack_driver="gesvd"))  # type: ignore[return-value]


def shrunk_inv_sqrt_diag(w: np.ndarray, d: int, reg: float) -> np.ndarray:
    """The diagonal of _shrunk(C, reg)^{-1/2} in C's eigenbasis, for C's non-zero eigenvalues ``w`` of its ``d``
    (the zero ones only matter off the span, where the cross-covariance vanishes)."""
    shrunk = (1 - reg) * w + reg * w.sum() / d
    return 1 / np.sqrt(np.maximum(shrunk, 1e-10 * max(float(shrunk.max()), 1e-30)))
