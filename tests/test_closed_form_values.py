"""The closed forms auto picks in nearly every run, tested by value: planted data with known structure,
and references that share no code with ``closed_form`` (scikit-learn, textbook float64 formulas)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm

from helpers.views import three_views
from modalign.align.auto import group_folds
from modalign.align.closed_form import (
    ClosedFormSettings,
    _inv_sqrt,
    _shrunk,
    cca_directions,
    cca_pair,
    cca_to,
    fit_closed_form,
    fit_procrustes,
    pca_basis,
    power_weights,
    procrustes_pair,
    procrustes_to,
    ridge_to,
    shrunk_inv_sqrt_from_eigh,
)
from modalign.align.closed_form_grid import PairGrid

RHO = np.array([0.95, 0.8, 0.6, 0.3])


def planted(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two views whose canonical correlations are exactly RHO (in the population): latent pairs (z, ρz + √(1−ρ²)e),
    plus independent noise dimensions, each side mixed by a random invertible matrix."""
    rng = np.random.default_rng(seed)
    k = len(RHO)
    z = rng.normal(size=(n, k))
    w = RHO * z + np.sqrt(1 - RHO**2) * rng.normal(size=(n, k))
    a = np.hstack([z, rng.normal(size=(n, 6))]) @ rng.normal(size=(k + 6, k + 6))
    b = np.hstack([w, rng.normal(size=(n, 4))]) @ rng.normal(size=(k + 4, k + 4))
    return a - a.mean(0), b - b.mean(0)


def test_cca_recovers_the_planted_canonical_correlations_and_whitens_both_sides() -> None:
    a, b = planted(40_000)
    ua, ub, corr = cca_directions(a, b, 4, reg=1e-9)
    np.testing.assert_allclose(corr, RHO, atol=0.01)
    za, zb = a @ ua, b @ ub
    n = len(a)
    # canonical variates: unit variance and uncorrelated on each side, correlated ρ_i across
    np.testing.assert_allclose(za.T @ za / n, np.eye(4), atol=1e-5)
    np.testing.assert_allclose(zb.T @ zb / n, np.eye(4), atol=1e-5)
    np.testing.assert_allclose(za.T @ zb / n, np.diag(corr), atol=1e-5)


def test_cca_matches_scikit_learn() -> None:
    """Same canonical correlations and (up to sign) the same first variates as scikit-learn's CCA."""
    from sklearn.cross_decomposition import CCA

    a, b = planted(3000, seed=1)
    ua, ub, corr = cca_directions(a, b, 2, reg=1e-9)
    ref = CCA(n_components=2, scale=False, max_iter=5000, tol=1e-10).fit(a, b)
    ra, rb = ref.transform(a, b)
    for i in range(2):
        got = np.corrcoef(a @ ua[:, i], b @ ub[:, i])[0, 1]
        want = np.corrcoef(ra[:, i], rb[:, i])[0, 1]
        assert got == pytest.approx(want, abs=1e-4) and got == pytest.approx(corr[i], abs=1e-4)
        assert abs(np.corrcoef(a @ ua[:, i], ra[:, i])[0, 1]) == pytest.approx(1, abs=1e-4)


def test_power_and_shrinkage_by_hand() -> None:
    corr = np.array([0.9, 0.5, 0.1])
    np.testing.assert_allclose(power_weights(corr, 2.0), corr)
    np.testing.assert_allclose(power_weights(corr, 4.0), corr**2)
    np.testing.assert_allclose(power_weights(corr, 0.0), np.ones(3))
    c = np.array([[4.0, 1.0], [1.0, 2.0]])
    np.testing.assert_allclose(_shrunk(c, 0.25), [[0.75 * 4 + 0.25 * 3, 0.75], [0.75, 0.75 * 2 + 0.25 * 3]])
    w, v = np.linalg.eigh(c)
    want = np.linalg.inv(sqrtm(_shrunk(c, 0.25)).real)
    np.testing.assert_allclose(shrunk_inv_sqrt_from_eigh(w, v, 0.25), want, atol=1e-12)
    a, b = planted(500)
    for power in (0.0, 1.0, 2.0, 4.0):
        pa, pb = cca_pair(a, b, 3, reg=0.3, power=power)
        ua, ub, s = cca_directions(a, b, 3, reg=0.3)
        np.testing.assert_allclose(pa, ua * s ** (power / 2))
        np.testing.assert_allclose(pb, ub * s ** (power / 2))


def test_procrustes_recovers_a_planted_rotation_with_an_orthogonal_map() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(2000, 8)) * np.linspace(3, 1, 8)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    b = a @ q + 0.01 * rng.normal(size=a.shape)
    a, b = a - a.mean(0), b - b.mean(0)
    for whiten in (False, True):
        pa, pb_rot = procrustes_pair(a, b, 8, whiten=whiten)
        pb, sb = pca_basis(b, 8)
        rotation = np.linalg.lstsq(pb / sb if whiten else pb, pb_rot, rcond=None)[0]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(8), atol=1e-8)  # orthogonal
        np.testing.assert_allclose(b @ pb_rot, a @ pa, atol=0.05 * np.abs(a @ pa).max())


def test_pca_basis_matches_the_svd() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12))
    x -= x.mean(0)
    basis, std = pca_basis(x, 5)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    np.testing.assert_allclose(std, s[:5] / np.sqrt(len(x) - 1), rtol=1e-10)
    np.testing.assert_allclose(np.abs(np.sum(basis * vt[:5].T, axis=0)), 1, atol=1e-10)  # same axes up to sign


def test_ridge_equals_its_normal_equations() -> None:
    rng = np.random.default_rng(4)
    b, y = rng.normal(size=(200, 6)), rng.normal(size=(200, 3))
    gram = b.T @ b
    lam = 0.5 * np.trace(gram) / 6
    np.testing.assert_allclose(ridge_to(y, b, alpha=0.5), np.linalg.inv(gram + lam * np.eye(6)) @ b.T @ y)


@pytest.mark.parametrize("kind", ["cca", "procrustes"])
def test_heads_retrieve_planted_pairs_on_held_out_rows(kind: str) -> None:
    """Fitted on 3,000 planted pairs (one latent, each side mixed and lightly noised), the heads find each
    held-out row's partner among 500 (R@1 near 1)."""
    rng = np.random.default_rng(6)
    z = rng.normal(size=(3500, 6))
    a = np.hstack([z, 0.05 * rng.normal(size=(3500, 3))]) @ rng.normal(size=(9, 9))
    b = np.hstack([z, 0.05 * rng.normal(size=(3500, 2))]) @ rng.normal(size=(8, 8))
    ones = np.ones(3000, bool)
    heads = fit_closed_form({"a": a[:3000].astype(np.float32), "b": b[:3000].astype(np.float32)},
                            {"a": ones, "b": ones}, ["a", "b"], ClosedFormSettings(kind, dim=6, whiten=True))
    with torch.no_grad():
        za = torch.nn.functional.normalize(heads["a"](torch.as_tensor(a[3000:], dtype=torch.float32)), dim=1)
        zb = torch.nn.functional.normalize(heads["b"](torch.as_tensor(b[3000:], dtype=torch.float32)), dim=1)
    sim = (za @ zb.T).numpy()
    r1 = (np.mean(sim.argmax(1) == np.arange(500)) + np.mean(sim.argmax(0) == np.arange(500))) / 2
    assert r1 > 0.95, r1


@pytest.mark.parametrize(("n", "dims"), [(800, None), (40, (60, 50))])
def test_the_grid_equals_the_solvers(n: int, dims: tuple[int, int] | None) -> None:
    """``PairGrid`` (auto's shared decompositions) gives the similarities ``cca_pair`` and ``procrustes_pair`` give,
    with more rows than dimensions and with fewer (where it works in the rows' span)."""
    a, b = planted(n, seed=7)
    if dims is not None:  # pad both sides with weak extra dimensions: more dimensions than rows
        rng = np.random.default_rng(9)
        a = np.hstack([a, 0.1 * rng.normal(size=(n, dims[0] - a.shape[1]))])
        b = np.hstack([b, 0.1 * rng.normal(size=(n, dims[1] - b.shape[1]))])
        a, b = a - a.mean(0), b - b.mean(0)
    grid = PairGrid(a, b, dim=5)
    for reg in (0.1, 0.6):
        for power in (0.0, 2.0):
            ga, gb = grid.matrices("cca", {"reg": reg, "power": power})
            ca, cb = cca_pair(a, b, 5, reg, power)
            np.testing.assert_allclose(a @ ga @ (b @ gb).T, a @ ca @ (b @ cb).T, atol=1e-8)
            np.testing.assert_allclose(np.abs(ga.T @ ca), np.abs(ca.T @ ca), atol=1e-6)  # the same directions
    for whiten in (True, False):
        ga, gb = grid.matrices("procrustes", {"whiten": whiten})
        pa, pb = procrustes_pair(a, b, 5, whiten)
        np.testing.assert_allclose(a @ ga @ (b @ gb).T, a @ pa @ (b @ pb).T, atol=1e-6)  # same similarities


def test_group_folds_put_each_group_in_one_fold_balanced_and_seeded() -> None:
    rng = np.random.default_rng(8)
    groups = rng.integers(0, 100, size=1000)  # 100 groups of unequal size
    folds = group_folds(groups, 3, seed=0)
    all_rows = np.concatenate(folds)
    assert sorted(all_rows.tolist()) == list(range(1000))  # every row exactly once
    fold_of_group: dict[int, int] = {}
    for f, rows in enumerate(folds):
        for g in np.unique(groups[rows]):
            assert fold_of_group.setdefault(int(g), f) == f, f"group {g} in two folds"
    per_fold = [len(np.unique(groups[rows])) for rows in folds]
    assert max(per_fold) - min(per_fold) <= 1  # groups dealt evenly
    again = group_folds(groups, 3, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip(folds, again, strict=True))
    other = group_folds(groups, 3, seed=1)
    assert not all(np.array_equal(x, y) for x, y in zip(folds, other, strict=True))


# ------------------------------------------------------------------ the to-anchor variants (3+ modalities, add)
def _anchor_and_other(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed anchor coordinates y (n, 5) and a new modality b (n, 7) that sees y through a mixing plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(3000, 5)) * np.linspace(2, 0.5, 5)
    b = np.hstack([y, rng.normal(size=(3000, 2))]) @ rng.normal(size=(7, 7)) + 0.1 * rng.normal(size=(3000, 7))
    return y - y.mean(0), b - b.mean(0)


def test_cca_to_with_power_one_is_least_squares_regression() -> None:
    """With no shrinkage and no truncation, cca_to's map is the least-squares regression of y on b."""
    y, b = _anchor_and_other(10)
    ls = np.linalg.lstsq(b, y, rcond=None)[0]
    np.testing.assert_allclose(cca_to(y, b, reg=1e-12, power=1.0), ls, rtol=1e-4, atol=1e-6)


def test_cca_to_with_power_zero_gives_the_anchor_covariance_and_shrinks_by_hand() -> None:
    """Power 0 maps b's whitened canonical variates into y's coordinates unscaled: cov(b W) = cov(y) when b has
    at least as many dimensions; a larger power only shrinks the weak directions."""
    y, b = _anchor_and_other(11)
    n = len(y)
    w0 = cca_to(y, b, reg=1e-12, power=0.0)
    np.testing.assert_allclose((b @ w0).T @ (b @ w0) / n, y.T @ y / n, rtol=1e-4, atol=1e-4)
    # by hand: Cbb^{-1/2} V Uᵀ Cyy^{1/2} from the SVD of Cyy^{-1/2} Cyb Cbb^{-1/2}, shrinkage reg on Cbb
    reg = 0.3
    cyy, cbb, cyb = y.T @ y / n, b.T @ b / n, y.T @ b / n
    cbb_s = (1 - reg) * cbb + reg * np.trace(cbb) / 7 * np.eye(7)
    ky, kb = np.linalg.inv(np.real(sqrtm(cyy))), np.linalg.inv(np.real(sqrtm(cbb_s)))
    u, s, vt = np.linalg.svd(ky @ cyb @ kb, full_matrices=False)
    for power in (0.0, 2.0):
        by_hand = kb @ vt.T @ np.diag(s**power) @ u.T @ np.real(sqrtm(cyy))
        np.testing.assert_allclose(cca_to(y, b, reg=reg, power=power), by_hand, rtol=1e-4, atol=1e-6)


def test_procrustes_to_recovers_a_rotation_onto_the_anchor() -> None:
    rng = np.random.default_rng(12)
    y = rng.normal(size=(2000, 6)) * np.linspace(3, 1, 6)
    y -= y.mean(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    b = y @ q  # the new modality is the anchor rotated
    w = procrustes_to(y, b, whiten=False)
    np.testing.assert_allclose(b @ w, y, atol=1e-8)
    np.testing.assert_allclose(w.T @ w, np.eye(6), atol=1e-8)  # an orthogonal map (PCA basis times a rotation)
    # whitened: b's PCA coordinates scaled to unit variance, then rotated: the result has isotropic covariance
    zw = b @ procrustes_to(y, b, whiten=True)
    cov = zw.T @ zw / (len(zw) - 1)
    np.testing.assert_allclose(cov, np.eye(6), atol=1e-8)
    # and the rotation is the one that best matches y: each whitened axis correlates positively with y's
    assert np.all(np.sum(zw * (y / y.std(0, ddof=1)), axis=0) > 0)


def test_procrustes_to_keeps_the_top_components_that_fit_the_anchor_and_the_rows() -> None:
    """b has more dimensions than the anchor: only b's top PCA components (as many as the anchor has) are
    whitened and rotated (by hand below); with fewer rows than dimensions, at most n − 1 components."""
    rng = np.random.default_rng(14)
    y = rng.normal(size=(400, 4)) * np.linspace(2, 1, 4)
    b = np.hstack([y @ np.linalg.qr(rng.normal(size=(4, 4)))[0], 0.05 * rng.normal(size=(400, 3))])
    y, b = y - y.mean(0), b - b.mean(0)
    _, sv, vt = np.linalg.svd(b, full_matrices=False)
    for whiten in (True, False):
        basis = vt[:4].T / (sv[:4] / np.sqrt(len(b) - 1)) if whiten else vt[:4].T
        u, _, wt = np.linalg.svd((b @ basis).T @ y)
        w = procrustes_to(y, b, whiten=whiten)
        assert w.shape == (7, 4)
        np.testing.assert_allclose(b @ w, b @ basis @ u @ wt, atol=1e-8)  # the same map up to PCA signs
    few = b[:3]
    few = few - few.mean(0)
    assert np.linalg.matrix_rank(procrustes_to(y[:3] - y[:3].mean(0), few, whiten=False)) == 2


def test_inv_sqrt_floors_eigenvalues_relative_to_the_largest() -> None:
    c = np.diag([1e6, 4.0, 0.0])  # a singular covariance at a large scale
    np.testing.assert_allclose(_inv_sqrt(c), np.diag([1e-3, 0.5, 1 / np.sqrt(1e-10 * 1e6)]), rtol=1e-9)


def test_fit_procrustes_heads_meet_on_a_planted_rotation() -> None:
    rng = np.random.default_rng(13)
    xa = rng.normal(size=(1200, 10)).astype(np.float32) * np.linspace(2, 1, 10).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    xb = (xa @ q + 0.01 * rng.normal(size=xa.shape)).astype(np.float32)
    ha, hb = fit_procrustes(xa[:1000], xb[:1000], dim=10, whiten=False)
    with torch.no_grad():
        za, zb = ha(torch.as_tensor(xa[1000:])).numpy(), hb(torch.as_tensor(xb[1000:])).numpy()
    np.testing.assert_allclose(za, zb, atol=0.05 * np.abs(za).max())
    # the defaults whiten, and the space has the dimension asked for
    ha, hb = fit_procrustes(xa[:1000], xb[:1000], dim=6)
    with torch.no_grad():
        za = ha(torch.as_tensor(xa[:1000])).numpy()
    assert za.shape == (1000, 6)
    np.testing.assert_allclose(np.cov(za.T), np.eye(6), atol=0.05)
    with pytest.raises(ValueError, match="paired rows, got 1000 and 999"):
        fit_procrustes(xa[:1000], xb[:999])


def test_the_helpers_defaults_are_the_settings_defaults() -> None:
    x = three_views(n=80, seed=23)
    a, b = x["a"].astype(np.float64), x["c"].astype(np.float64)
    a, b = a - a.mean(0), b - b.mean(0)
    s = ClosedFormSettings("cca")
    for got, want in ((procrustes_pair(a, b, 4), procrustes_pair(a, b, 4, s.whiten)),
                      ((procrustes_to(a, b),), (procrustes_to(a, b, s.whiten),)),
                      ((cca_to(a, b),), (cca_to(a, b, s.reg, s.power),)),
                      ((ridge_to(a, b),), (ridge_to(a, b, s.alpha),))):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
    assert not np.allclose(procrustes_to(a, b), procrustes_to(a, b, False))
    assert not np.allclose(cca_to(a, b), cca_to(a, b, 0.5, 1.0))
    assert not np.allclose(cca_to(a, b), cca_to(a, b, 0.1, 2.0))
    assert not np.allclose(ridge_to(a, b), ridge_to(a, b, 1.1))
    assert not np.allclose(procrustes_pair(a, b, 4)[1], procrustes_pair(a, b, 4, False)[1])


def test_inverse_square_roots_are_exact_at_any_scale() -> None:
    """The eigenvalue floor is relative to the largest eigenvalue: a matrix of tiny entries is not floored."""
    rng = np.random.default_rng(24)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    for scale in (1e-12, 1.0, 1e6):
        c = scale * (q * np.array([1.0, 0.5, 0.1, 0.01])) @ q.T
        want = np.linalg.inv(sqrtm(c).real)
        np.testing.assert_allclose(_inv_sqrt(c), want, rtol=1e-6)
        w, v = np.linalg.eigh(c)
        np.testing.assert_allclose(shrunk_inv_sqrt_from_eigh(w, v, 0.0), want, rtol=1e-6)


def test_procrustes_to_a_wider_anchor_uses_the_thin_svd() -> None:
    x = three_views(n=200, seed=25)
    target, b = x["a"][:, :9].astype(np.float64), x["c"][:, :5].astype(np.float64)
    target, b = target - target.mean(0), b - b.mean(0)
    m = procrustes_to(target, b)
    assert m.shape == (5, 9)  # k = b's 5 dims onto the 9-d anchor


def test_fit_procrustes_passes_its_dim_and_whitening_on() -> None:
    rng = np.random.default_rng(26)
    z = rng.normal(size=(300, 270))
    xa, xb = z.astype(np.float32), (z @ rng.normal(size=(270, 270))).astype(np.float32)
    ha, hb = fit_procrustes(xa, xb)
    assert ha.out_dim == hb.out_dim == 256  # the default dim
    plain_a, _ = fit_procrustes(xa[:, :20], xb[:, :20], dim=8, whiten=False)
    white_a, _ = fit_procrustes(xa[:, :20], xb[:, :20], dim=8, whiten=True)
    direct = fit_closed_form({"a": xa[:, :20], "b": xb[:, :20]}, {"a": np.ones(300, bool), "b": np.ones(300, bool)},
                             ["a", "b"], ClosedFormSettings("procrustes", dim=8, whiten=False))
    torch.testing.assert_close(plain_a.linear.weight, direct["a"].linear.weight)
    assert not torch.allclose(plain_a.linear.weight, white_a.linear.weight)
