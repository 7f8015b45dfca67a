"""Closed-form alignment baselines: fitted in seconds, returned as ordinary linear heads.

All solvers work on standardised features (centered, divided by the mean row norm — the same
standardisation every head applies), so the result drops into ``AlignedModel`` unchanged.

Two modalities: Procrustes and CCA are symmetric. More (or a locked modality): one *anchor* modality
defines the space — its own PCA (Procrustes, ridge), its canonical space with its best-paired partner
(CCA) or its raw standardised features (locked) — and every other modality is mapped into it on the
rows it shares with the anchor: a rotation (Procrustes), CCA against the fixed anchor coordinates,
or ridge regression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from modalign.align.array_memo import ArrayMemo, array_key
from modalign.align.heads.base import Head
from modalign.align.heads.identity import IdentityHead
from modalign.align.heads.linear import LinearHead

# auto's grid conditions the same fold rows once per input_norm, not per candidate (a whitening costs a
# D × D eigendecomposition and an n × D × D product); at most a few 256 MB matrices are kept
_STANDARDIZED: ArrayMemo[tuple[np.ndarray, Head]] = ArrayMemo(capacity=4, max_bytes=1 << 28)


def _standardized(head: Head, x: np.ndarray) -> np.ndarray:
    """``head``'s conditioning fitted on ``x`` and ``x`` conditioned (float64). Do not modify the result."""
    key = array_key("standardized", x, extra=head.input_norm)
    hit = _STANDARDIZED.get(key)
    if hit is not None:
        head.copy_input_stats(hit[1])
        return hit[0]
    head.fit_input_stats(x)
    with torch.no_grad():
        std = head.standardize(torch.as_tensor(x, dtype=torch.float32)).numpy().astype(np.float64)
    reference = type(head)(head.in_dim, **({} if head.name == "identity" else {"out_dim": head.out_dim}),
                           input_norm=head.input_norm)
    reference.copy_input_stats(head)
    _STANDARDIZED.put(key, (std, reference), nbytes=std.nbytes)
    return std


def pca_basis(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k principal directions (D, k) of centered ``x`` and the std of each component.

    From the eigendecomposition of xᵀx/n, which CCA on the same rows shares (``_memo``): a D × D problem
    instead of the thin SVD of the n × D matrix, several times faster once n is in the thousands.
    """
    return pca_from_gram(*_memo("eigh", _memo("gram", x)[0]), len(x), k)


def pca_from_gram(w: np.ndarray, v: np.ndarray, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``pca_basis`` from the ascending eigenpairs (w, v) of the centered gram xᵀx/n of n rows."""
    order = np.argsort(w)[::-1][:k]
    std = np.sqrt(np.maximum(w[order], 0) * n / max(n - 1, 1))
    return v[:, order].copy(), np.maximum(std, 1e-8)


def _set_linear(head: LinearHead, matrix: np.ndarray) -> LinearHead:
    """Load ``z = x_std @ matrix`` into a LinearHead (its bias is zero: inputs are centered)."""
    with torch.no_grad():
        head.linear.weight.copy_(torch.as_tensor(matrix.T, dtype=torch.float32))
        if head.linear.bias is not None:
            head.linear.bias.zero_()
    return head


def common_dim(dim: int, xa: np.ndarray, xb: np.ndarray) -> int:
    return int(min(dim, xa.shape[1], xb.shape[1], len(xa) - 1))


def _shrunk(c: np.ndarray, reg: float) -> np.ndarray:
    """(1 − reg)·C + reg·(tr C / d)·I: scale-free shrinkage towards a multiple of the identity."""
    d = len(c)
    return (1 - reg) * c + reg * (np.trace(c) / d) * np.eye(d)


# the validation grid refits on the same rows: each decomposition costs once per fit, not once per grid point
_DECOMPOSITIONS: ArrayMemo[tuple[np.ndarray, ...]] = ArrayMemo(capacity=16)


def _memo(op: str, m: np.ndarray, other: np.ndarray | None = None, reg: float = 0.0) -> tuple[np.ndarray, ...]:
    """eigh, thin SVD ("svd"), scaled cross-product mᵀ·other/n ("gram") or shrunk inverse
    square root ("isqrt") of a matrix, remembered for the last few. Do not modify the results."""
    key = array_key(op, m, other, extra=reg)
    hit = _DECOMPOSITIONS.get(key)
    if hit is not None:
        return hit
    if op == "eigh":
        hit = tuple(np.linalg.eigh(m))
    elif op == "svd":
        hit = tuple(np.linalg.svd(m, full_matrices=False))
    elif op == "gram":
        hit = (m.T @ (m if other is None else other) / len(m),)
    elif op == "isqrt":
        hit = (shrunk_inv_sqrt_from_eigh(*_memo("eigh", m), reg),)
    else:
        raise ValueError(f"unknown operation {op!r}")
    return _DECOMPOSITIONS.put(key, hit)


def shrunk_inv_sqrt_from_eigh(w: np.ndarray, v: np.ndarray, reg: float) -> np.ndarray:
    """_shrunk(C, reg)^{-1/2} from C's eigenpairs: shrinkage towards a multiple of I keeps C's eigenvectors,
    so one eigendecomposition serves every reg."""
    w = (1 - reg) * w + reg * w.mean()  # tr C / d = mean eigenvalue
    return (v / np.sqrt(np.maximum(w, 1e-10 * max(w.max(), 1e-30)))) @ v.T


def _shrunk_inv_sqrt(c: np.ndarray, reg: float) -> np.ndarray:
    """_shrunk(c, reg)^{-1/2} (from one memoised eigendecomposition of c)."""
    return _memo("isqrt", c, reg=reg)[0]


def _inv_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v / np.sqrt(np.maximum(w, 1e-10 * max(w.max(), 1e-30)))) @ v.T


def _sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.maximum(w, 0))) @ v.T


# ---------------------------------------------------------------------------- two-modality solvers
def procrustes_pair(a: np.ndarray, b: np.ndarray, k: int, whiten: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """PCA(+whitening) of each side to k dims, then W = U Vᵀ from the SVD of Bᵀ A rotates B onto A."""
    pa, sa = pca_basis(a, k)
    pb, sb = pca_basis(b, k)
    if whiten:
        pa, pb = pa / sa, pb / sb
    u, _, vt = np.linalg.svd((b @ pb).T @ (a @ pa), full_matrices=False)
    return pa, pb @ (u @ vt)


def cca_directions(a: np.ndarray, b: np.ndarray, k: int, reg: float = 0.1) -> tuple[np.ndarray, ...]:
    """Regularised CCA: the top-k canonical directions of each side (D_a, k), (D_b, k) and their canonical
    correlations ρ (k,), descending. Each side is whitened by its own shrunk covariance."""
    ka, kb = _shrunk_inv_sqrt(_memo("gram", a)[0], reg), _shrunk_inv_sqrt(_memo("gram", b)[0], reg)
    u, s, vt = _memo("svd", ka @ _memo("gram", a, b)[0] @ kb)
    return ka @ u[:, :k], kb @ vt[:k].T, s[:k]


def power_weights(corr: np.ndarray, power: float) -> np.ndarray:
    """ρ^(power/2) per canonical direction (ρ floored at 1e-8): the factor ``cca_pair`` scales both sides by."""
    return np.maximum(corr, 1e-8) ** (power / 2)


def cca_pair(a: np.ndarray, b: np.ndarray, k: int, reg: float = 0.1, power: float = 1.0) -> tuple[np.ndarray, ...]:
    """Regularised CCA: top-k canonical directions of each side, each scaled by ρ^(power/2).

    Scaling by the canonical correlations ρ lets well-correlated directions dominate the cosine
    (power 0 = plain whitened canonical variates).
    """
    ua, ub, corr = cca_directions(a, b, k, reg)
    w = power_weights(corr, power)
    return ua * w, ub * w


# ---------------------------------------------------------------------------- into a fixed anchor space
def procrustes_to(target: np.ndarray, b: np.ndarray, whiten: bool = True) -> np.ndarray:
    """(Semi-)orthogonal map of b's PCA(+whitened) coordinates onto fixed anchor coordinates."""
    k = min(target.shape[1], b.shape[1], len(b) - 1)
    pb, sb = pca_basis(b, k)
    if whiten:
        pb = pb / sb
    u, _, vt = np.linalg.svd((b @ pb).T @ target, full_matrices=False)
    return pb @ (u @ vt)


def cca_to(target: np.ndarray, b: np.ndarray, reg: float = 0.1, power: float = 1.0) -> np.ndarray:
    """CCA of b against fixed anchor coordinates Y, expressed back in Y's coordinates.

    b's canonical variates, scaled by ρ^power, are mapped into Y through (Cyy^{-1/2} U)^{-1} =
    Uᵀ Cyy^{1/2}; with power 1 and no truncation this is least-squares regression of Y on b.
    """
    n = len(b)
    cyy = _shrunk(target.T @ target / n, 1e-6)
    ky, kb = _inv_sqrt(cyy), _inv_sqrt(_shrunk(b.T @ b / n, reg))
    u, s, vt = np.linalg.svd(ky @ (target.T @ b / n) @ kb, full_matrices=False)
    return (kb @ vt.T) * (np.maximum(s, 1e-8) ** power) @ u.T @ _sqrt(cyy)


def ridge_to(target: np.ndarray, b: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    """argmin_W ‖bW − Y‖² + α'‖W‖², with α' = α·tr(bᵀb)/D (α is relative to the features' scale)."""
    gram = b.T @ b
    reg = alpha * np.trace(gram) / len(gram)
    return np.linalg.solve(gram + reg * np.eye(len(gram)), b.T @ target)


# ---------------------------------------------------------------------------- n modalities
@dataclass
class ClosedFormSettings:
    kind: str  # procrustes | cca | ridge
    dim: int = 256
    whiten: bool = True  # procrustes: both sides; ridge: the anchor's PCA target
    reg: float = 0.1  # cca shrinkage
    power: float = 1.0  # cca: weight canonical directions by ρ^power
    alpha: float = 0.1  # ridge
    input_norm: str = "center"  # the heads' input conditioning (``Head``): "center" or "l2"


def _check_closed_form(settings: ClosedFormSettings, modalities: list[str], anchor: str | None,
                       locked: tuple[str, ...]) -> str:
    if settings.kind not in ("procrustes", "cca", "ridge"):
        raise ValueError(f"unknown closed-form solver {settings.kind!r}")
    anchor = anchor or (locked[0] if locked else None) or modalities[0]
    if anchor not in modalities:
        raise ValueError(f"anchor {anchor!r} is not one of the modalities {modalities}")
    extra = [m for m in locked if m != anchor]
    if extra:
        raise ValueError(f"closed-form methods can lock only the anchor modality ({anchor!r}), not {extra}")
    return anchor


def conditioned(features: dict[str, np.ndarray], present: dict[str, np.ndarray], modalities: list[str],
                 input_norm: str, locked: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict[str, Head]]:
    """Each modality's rows conditioned as its head will condition them (zeros where absent), and the heads
    holding those input statistics (identity heads for locked modalities)."""
    std: dict[str, np.ndarray] = {}
    heads: dict[str, Head] = {}
    for m in modalities:
        rows = present[m]
        if rows.sum() < 3:
            raise ValueError(f"modality {m!r} has fewer than 3 rows")
        heads[m] = IdentityHead(features[m].shape[1], input_norm=input_norm) if m in locked \
            else LinearHead(features[m].shape[1], 1, input_norm=input_norm)
        full = np.zeros(features[m].shape, np.float64)
        full[rows] = _standardized(heads[m], features[m][rows])
        std[m] = full
    return std, heads


def with_matrices(features: dict[str, np.ndarray], heads: dict[str, Head], mats: dict[str, np.ndarray],
                   input_norm: str) -> dict[str, Head]:
    """``heads`` with every modality in ``mats`` replaced by a LinearHead holding its matrix."""
    out = dict(heads)
    for m, mat in mats.items():
        head = LinearHead(features[m].shape[1], mat.shape[1], bias=True, input_norm=input_norm)
        head.copy_input_stats(heads[m])
        out[m] = _set_linear(head, mat)
    return out


def fit_closed_form(
    features: dict[str, np.ndarray],
    present: dict[str, np.ndarray],
    modalities: list[str],
    settings: ClosedFormSettings,
    anchor: str | None = None,
    locked: tuple[str, ...] = (),
) -> dict[str, Head]:
    """Heads of every modality from one closed-form solver (see the module docstring)."""
    anchor = _check_closed_form(settings, modalities, anchor, locked)
    std, heads = conditioned(features, present, modalities, settings.input_norm, locked)
    others = [m for m in modalities if m != anchor]
    shared = {m: np.flatnonzero(present[anchor] & present[m]) for m in others}
    for m, rows in shared.items():
        if len(rows) < 3:
            raise ValueError(f"{settings.kind}: modality {m!r} shares {len(rows)} rows with the anchor {anchor!r}")
    mats: dict[str, np.ndarray] = {}
    a_all = std[anchor][present[anchor]]
    k = min(settings.dim, a_all.shape[1], len(a_all) - 1)
    if anchor in locked:
        pass  # the anchor's standardised features are the space (identity head)
    elif settings.kind == "procrustes" and len(modalities) == 2:
        m = others[0]
        a, b = std[anchor][shared[m]], std[m][shared[m]]
        mats[anchor], mats[m] = procrustes_pair(a, b, common_dim(settings.dim, a, b), settings.whiten)
    elif settings.kind == "cca":
        first = max(others, key=lambda m: len(shared[m]))  # the canonical space comes from the best-paired one
        a, b = std[anchor][shared[first]], std[first][shared[first]]
        mats[anchor], mats[first] = cca_pair(a, b, common_dim(settings.dim, a, b), settings.reg, settings.power)
    else:
        basis, sd = pca_basis(a_all, k)
        mats[anchor] = basis / sd if settings.whiten else basis
    map_into_anchor(std, shared, mats, anchor, settings)
    return with_matrices(features, heads, mats, settings.input_norm)


def map_into_anchor(std: dict[str, np.ndarray], shared: dict[str, np.ndarray], mats: dict[str, np.ndarray],
                    anchor: str, settings: ClosedFormSettings) -> None:
    """Fill ``mats`` for every modality of ``shared`` still without one: its conditioned rows shared with the
    anchor mapped onto the anchor's coordinates (its space when ``mats`` has one, else its own features)."""
    for m, rows in shared.items():
        if m in mats:
            continue
        a = std[anchor][rows]
        target = a @ mats[anchor] if anchor in mats else a
        b = std[m][rows]
        if settings.kind == "procrustes":
            mats[m] = procrustes_to(target, b, settings.whiten)
        elif settings.kind == "cca":
            mats[m] = cca_to(target, b, settings.reg, settings.power)
        else:
            mats[m] = ridge_to(target, b, settings.alpha)


def fit_procrustes(
    xa: np.ndarray, xb: np.ndarray, dim: int = 256, whiten: bool = True
) -> tuple[LinearHead, LinearHead]:
    """Orthogonal Procrustes between PCA(+whitened) spaces of two paired modalities (heads a, b)."""
    if len(xa) != len(xb):
        raise ValueError(f"Procrustes needs paired rows, got {len(xa)} and {len(xb)}")
    ones = np.ones(len(xa), dtype=bool)
    heads = fit_closed_form({"a": xa, "b": xb}, {"a": ones, "b": ones}, ["a", "b"],
                            ClosedFormSettings("procrustes", dim=dim, whiten=whiten))
    return heads["a"], heads["b"]  # type: ignore[return-value]
