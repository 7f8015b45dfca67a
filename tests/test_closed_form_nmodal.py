"""The closed forms with several modalities, tested by value: rows missing from a modality, a locked anchor,
the anchor that makes the space, and every setting reaching the solver that maps a modality into it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.views import recall_at_1, three_views
from modalign.align.closed_form import (
    ClosedFormSettings,
    cca_pair,
    cca_to,
    common_dim,
    conditioned,
    fit_closed_form,
    pca_basis,
    procrustes_pair,
    procrustes_to,
    ridge_to,
)


@pytest.mark.parametrize("kind", ["cca", "procrustes", "ridge"])
def test_three_modalities_with_missing_rows_meet_in_the_anchor_space(kind: str) -> None:
    """c is present on half the training rows only (zeros elsewhere): each modality is fitted on the rows it
    shares with the anchor, and every pair retrieves held-out rows."""
    x = three_views()
    train = slice(0, 1200)
    present = {"a": np.ones(1200, bool), "b": np.ones(1200, bool), "c": np.arange(1200) % 2 == 0}
    feats = {m: v[train].copy() for m, v in x.items()}
    feats["c"][~present["c"]] = 0.0
    heads = fit_closed_form(feats, present, ["a", "b", "c"], ClosedFormSettings(kind, dim=5, whiten=True))
    for q, t in (("a", "b"), ("a", "c"), ("b", "c")):
        assert recall_at_1(heads, x, q, t, slice(1200, 1500)) > 0.9, (kind, q, t)


def test_a_locked_anchor_keeps_its_own_features_and_the_others_map_into_them() -> None:
    x = three_views(seed=16)
    ones = np.ones(1200, bool)
    heads = fit_closed_form({m: v[:1200] for m, v in x.items()}, {m: ones for m in x}, ["a", "b", "c"],
                            ClosedFormSettings("cca", dim=5), locked=("a",))
    with torch.no_grad():
        za = heads["a"](torch.as_tensor(x["a"][:5]))
    assert heads["a"].name == "identity" and za.shape == (5, 9)
    assert heads["b"].out_dim == 9 and heads["c"].out_dim == 9
    # the space is a's own 9-d features, noise dimensions included: far above chance (1/300), below the 0.9 of
    # a fitted 5-d space
    assert recall_at_1(heads, x, "b", "a", slice(1200, 1500)) > 0.6
    assert recall_at_1(heads, x, "c", "a", slice(1200, 1500)) > 0.6


def test_closed_form_refusals_name_the_problem() -> None:
    x = three_views(n=50)
    ones = np.ones(50, bool)
    feats = {m: v for m, v in x.items()}
    with pytest.raises(ValueError, match="unknown closed-form solver 'pca'"):
        fit_closed_form(feats, {m: ones for m in x}, ["a", "b"], ClosedFormSettings("pca"))
    with pytest.raises(ValueError, match=r"anchor 'z' is not one of the modalities \['a', 'b'\]"):
        fit_closed_form(feats, {m: ones for m in x}, ["a", "b"], ClosedFormSettings("cca"), anchor="z")
    with pytest.raises(ValueError, match=r"can lock only the anchor modality \('a'\), not \['b'\]"):
        fit_closed_form(feats, {m: ones for m in x}, ["a", "b"], ClosedFormSettings("cca"), locked=("a", "b"))
    few = np.zeros(50, bool)
    few[:2] = True
    with pytest.raises(ValueError, match="modality 'b' has fewer than 3 rows"):
        fit_closed_form(feats, {"a": ones, "b": few}, ["a", "b"], ClosedFormSettings("cca"))
    apart = np.zeros(50, bool)
    apart[[0, 1, 2, 10]] = True
    other = ~apart
    other[[0, 1]] = True
    with pytest.raises(ValueError, match=r"cca: modality 'b' shares 2 rows with the anchor 'a'"):
        fit_closed_form(feats, {"a": apart, "b": other}, ["a", "b"], ClosedFormSettings("cca"))
    # the anchor defaults to the locked modality, else the first
    heads = fit_closed_form(feats, {m: ones for m in x}, ["a", "b"], ClosedFormSettings("cca", dim=3), locked=("b",))
    assert heads["b"].name == "identity" and heads["a"].out_dim == 8


def test_common_dim_is_bounded_by_the_request_both_widths_and_the_rows() -> None:
    wide, narrow = np.zeros((100, 10)), np.zeros((100, 8))
    assert common_dim(5, wide, narrow) == 5
    assert common_dim(50, wide, narrow) == 8
    assert common_dim(50, np.zeros((100, 7)), narrow) == 7
    assert common_dim(50, np.zeros((6, 10)), np.zeros((6, 9))) == 5  # n rows span n − 1 centred directions
    assert isinstance(common_dim(50, wide, narrow), int)


def test_conditioned_gives_each_modality_its_head_and_zeros_where_absent() -> None:
    x = three_views(n=12)
    present = {"a": np.ones(12, bool), "b": np.arange(12) < 3}  # exactly 3 rows of b: enough
    std, heads = conditioned({m: x[m] for m in ("a", "b")}, present, ["a", "b"], "l2", locked=("a",))
    assert heads["a"].name == "identity" and heads["b"].name == "linear" and heads["b"].out_dim == 1
    assert heads["a"].input_norm == heads["b"].input_norm == "l2"
    assert std["b"].dtype == np.float64 and not std["b"][3:].any()
    with torch.no_grad():
        want = heads["b"].standardize(torch.as_tensor(x["b"][:3])).numpy()
    np.testing.assert_allclose(std["b"][:3], want, atol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(std["a"], heads["a"].standardize(torch.as_tensor(x["a"])).numpy(), atol=1e-6)


def test_cca_takes_its_canonical_space_from_the_best_paired_modality() -> None:
    x = three_views(n=600, seed=21)
    present = {"a": np.ones(600, bool), "b": np.arange(600) < 200, "c": np.ones(600, bool)}
    feats = {m: np.where(present[m][:, None], v, 0).astype(np.float32) for m, v in x.items()}
    settings = ClosedFormSettings("cca", dim=4)
    heads = fit_closed_form(feats, present, ["a", "b", "c"], settings)
    std, _ = conditioned(feats, present, ["a", "b", "c"], settings.input_norm, ())
    ma, mc = cca_pair(std["a"], std["c"], common_dim(4, std["a"], std["c"]), settings.reg, settings.power)
    with torch.no_grad():
        za, zc = heads["a"](torch.as_tensor(x["a"])).numpy(), heads["c"](torch.as_tensor(x["c"])).numpy()
    np.testing.assert_allclose(za, std["a"] @ ma, atol=1e-4)  # c (600 shared rows) made the space, not b (200)
    np.testing.assert_allclose(zc, std["c"] @ mc, atol=1e-4)
    assert heads["b"].out_dim == 4


@pytest.mark.parametrize("kind", ["procrustes", "ridge"])
def test_the_anchor_pca_keeps_at_most_its_width_and_its_rows_minus_one(kind: str) -> None:
    x = three_views(n=300, seed=22)
    ones = np.ones(300, bool)
    wide = fit_closed_form(x, {m: ones for m in x}, ["a", "b", "c"], ClosedFormSettings(kind, dim=50))
    assert {h.out_dim for h in wide.values()} == {9}  # the anchor a is 9-d
    few = {m: v[:6] for m, v in x.items()}
    small = fit_closed_form(few, {m: ones[:6] for m in x}, ["a", "b", "c"], ClosedFormSettings(kind, dim=50))
    assert small["a"].out_dim == 5
    narrow = fit_closed_form(x, {m: ones for m in x}, ["a", "b", "c"], ClosedFormSettings(kind, dim=3))
    assert {h.out_dim for h in narrow.values()} == {3}
    # a locked modality is the default anchor, and the anchor argument picks another
    locked = fit_closed_form(x, {m: ones for m in x}, ["a", "b", "c"], ClosedFormSettings(kind, dim=50),
                             locked=("b",))
    assert locked["b"].name == "identity" and locked["a"].out_dim == 8
    other = fit_closed_form(x, {m: ones for m in x}, ["a", "b", "c"], ClosedFormSettings(kind, dim=50), anchor="c")
    assert {h.out_dim for h in other.values()} == {7}


def _embed(head, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return head(torch.as_tensor(x)).numpy()


def _by_hand(x: dict[str, np.ndarray], present: dict[str, np.ndarray], settings: ClosedFormSettings,
             first: str) -> dict[str, np.ndarray]:
    """The maps ``fit_closed_form`` should build with anchor "a" over three modalities, written out from the
    helpers: the anchor's space (CCA with ``first``, else its PCA, whitened or not), then every other
    modality mapped into it on the rows it shares with the anchor, with the settings' own knobs."""
    mods = sorted(x)
    std, _ = conditioned(x, present, mods, settings.input_norm, ())
    mats: dict[str, np.ndarray] = {}
    if settings.kind == "cca":
        rows = present["a"] & present[first]
        a, b = std["a"][rows], std[first][rows]
        mats["a"], mats[first] = cca_pair(a, b, common_dim(settings.dim, a, b), settings.reg, settings.power)
    else:
        basis, sd = pca_basis(std["a"][present["a"]], min(settings.dim, 9, int(present["a"].sum()) - 1))
        mats["a"] = basis / sd if settings.whiten else basis
    for m in mods:
        if m in mats:
            continue
        rows = present["a"] & present[m]
        target, b = std["a"][rows] @ mats["a"], std[m][rows]
        if settings.kind == "cca":
            mats[m] = cca_to(target, b, settings.reg, settings.power)
        elif settings.kind == "procrustes":
            mats[m] = procrustes_to(target, b, settings.whiten)
        else:
            mats[m] = ridge_to(target, b, settings.alpha)
    return {m: std[m] @ mats[m] for m in mods}


@pytest.mark.parametrize("settings", [
    ClosedFormSettings("cca", dim=4, reg=0.4, power=2.0),
    ClosedFormSettings("cca", dim=4, reg=0.02, power=0.5),
    ClosedFormSettings("procrustes", dim=4, whiten=False),
    ClosedFormSettings("procrustes", dim=4, whiten=True),
    ClosedFormSettings("ridge", dim=4, alpha=7.0, whiten=False),
    ClosedFormSettings("ridge", dim=4, alpha=0.01, whiten=True),
], ids=lambda s: f"{s.kind}-reg{s.reg}-power{s.power}-whiten{s.whiten}-alpha{s.alpha}")
def test_every_setting_reaches_the_solvers_that_map_into_the_anchor_space(settings: ClosedFormSettings) -> None:
    """Three modalities (b on a third of the rows): each head equals the helpers called with the settings'
    reg, power, whitening and alpha, so none of them is dropped on the way to a to-anchor solver."""
    x = three_views(n=300, seed=31)
    present = {"a": np.ones(300, bool), "b": np.arange(300) % 3 == 0, "c": np.ones(300, bool)}
    feats = {m: np.where(present[m][:, None], v, 0).astype(np.float32) for m, v in x.items()}
    heads = fit_closed_form(feats, present, ["a", "b", "c"], settings)
    want = _by_hand(feats, present, settings, first="c")
    for m in ("a", "b", "c"):
        rows = present[m]  # absent rows hold zeros, which a head does not map to zero
        np.testing.assert_allclose(_embed(heads[m], feats[m])[rows], want[m][rows], atol=2e-4, err_msg=m)


def test_the_best_paired_modality_wins_even_when_its_name_sorts_first() -> None:
    """The canonical space comes from the modality sharing the most rows with the anchor: here "b" (all rows)
    against "c" (a third), so a maximum taken over the names alone would pick "c"."""
    x = three_views(n=300, seed=32)
    present = {"a": np.ones(300, bool), "b": np.ones(300, bool), "c": np.arange(300) % 3 == 0}
    feats = {m: np.where(present[m][:, None], v, 0).astype(np.float32) for m, v in x.items()}
    settings = ClosedFormSettings("cca", dim=4)
    heads = fit_closed_form(feats, present, ["a", "b", "c"], settings)
    want = _by_hand(feats, present, settings, first="b")
    for m in ("a", "b", "c"):
        rows = present[m]  # absent rows hold zeros, which a head does not map to zero
        np.testing.assert_allclose(_embed(heads[m], feats[m])[rows], want[m][rows], atol=2e-4, err_msg=m)


@pytest.mark.parametrize("whiten", [True, False])
def test_two_modality_procrustes_is_the_pair_solver_in_the_common_dimension(whiten: bool) -> None:
    """With two modalities Procrustes rotates both sides into a space of their common dimension
    (``procrustes_pair``): asked for 50 dims of a 9-d and a 7-d view, both heads give 7. The n-modal path (the
    anchor's PCA, then the other mapped into it) would keep the anchor's 9."""
    x = three_views(n=300, seed=33)
    ones = np.ones(300, bool)
    feats = {"a": x["a"], "c": x["c"]}
    for dim in (4, 50):
        settings = ClosedFormSettings("procrustes", dim=dim, whiten=whiten)
        heads = fit_closed_form(feats, {"a": ones, "c": ones}, ["a", "c"], settings)
        std, _ = conditioned(feats, {"a": ones, "c": ones}, ["a", "c"], settings.input_norm, ())
        ma, mc = procrustes_pair(std["a"], std["c"], common_dim(dim, std["a"], std["c"]), whiten)
        assert ma.shape[1] == mc.shape[1] == heads["a"].out_dim == heads["c"].out_dim == min(dim, 7)
        np.testing.assert_allclose(_embed(heads["a"], x["a"]), std["a"] @ ma, atol=2e-4)
        np.testing.assert_allclose(_embed(heads["c"], x["c"]), std["c"] @ mc, atol=2e-4)


@pytest.mark.parametrize("kind", ["cca", "procrustes", "ridge"])
def test_three_shared_rows_are_enough_and_two_are_not(kind: str) -> None:
    x = three_views(n=40, seed=34)
    ones = np.ones(40, bool)
    for shared, ok in ((3, True), (2, False)):
        other = np.zeros(40, bool)
        other[:shared] = True
        other[30:] = True  # b has rows of its own, but only `shared` of them overlap the anchor's
        anchor_rows = np.arange(40) < 30
        present = {"a": anchor_rows, "b": other, "c": ones}
        feats = {m: np.where(present[m][:, None], v, 0).astype(np.float32) for m, v in x.items()}
        settings = ClosedFormSettings(kind, dim=2)
        if ok:
            heads = fit_closed_form(feats, present, ["a", "b", "c"], settings)
            assert np.isfinite(_embed(heads["b"], feats["b"])).all()
        else:
            with pytest.raises(ValueError, match=f"{kind}: modality 'b' shares 2 rows with the anchor 'a'"):
                fit_closed_form(feats, present, ["a", "b", "c"], settings)
