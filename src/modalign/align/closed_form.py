"""Closed-form alignment baselines: fitted in seconds, returned as ordinary linear heads.

All solvers work on standardised features (centered, divided by the mean row norm — the same
standardisation every head applies), so the result drops into ``AlignedModel`` unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from modalign.align.heads.linear import LinearHead


def _standardized(head: LinearHead, x: np.ndarray) -> np.ndarray:
    head.fit_input_stats(x)
    with torch.no_grad():
        return head.standardize(torch.as_tensor(x, dtype=torch.float32)).numpy().astype(np.float64)


def pca_basis(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k principal directions (D, k) of centered ``x`` and the std of each component."""
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    std = s[:k] / np.sqrt(max(len(x) - 1, 1))
    return vt[:k].T, np.maximum(std, 1e-8)


def _set_linear(head: LinearHead, matrix: np.ndarray) -> LinearHead:
    """Load ``z = x_std @ matrix`` into a LinearHead (its bias is zero: inputs are centered)."""
    with torch.no_grad():
        head.linear.weight.copy_(torch.as_tensor(matrix.T, dtype=torch.float32))
        if head.linear.bias is not None:
            head.linear.bias.zero_()
    return head


def common_dim(dim: int, xa: np.ndarray, xb: np.ndarray) -> int:
    return int(min(dim, xa.shape[1], xb.shape[1], len(xa) - 1))


def fit_procrustes(
    xa: np.ndarray, xb: np.ndarray, dim: int = 256, whiten: bool = True
) -> tuple[LinearHead, LinearHead]:
    """Orthogonal Procrustes between PCA(+whitened) spaces of two modalities.

    Each side is projected onto its top-k principal components (k = the common dim), whitened
    if asked; then W = U Vᵀ from the SVD of Bᵀ A is the rotation taking B closest to A.
    Heads: a → A, b → B W.
    """
    if len(xa) != len(xb):
        raise ValueError(f"Procrustes needs paired rows, got {len(xa)} and {len(xb)}")
    k = common_dim(dim, xa, xb)
    head_a, head_b = LinearHead(xa.shape[1], k, bias=True), LinearHead(xb.shape[1], k, bias=True)
    a, b = _standardized(head_a, xa), _standardized(head_b, xb)
    pa, sa = pca_basis(a, k)
    pb, sb = pca_basis(b, k)
    if whiten:
        pa, pb = pa / sa, pb / sb
    u, _, vt = np.linalg.svd((b @ pb).T @ (a @ pa))
    rotation = u @ vt
    return _set_linear(head_a, pa), _set_linear(head_b, pb @ rotation)
