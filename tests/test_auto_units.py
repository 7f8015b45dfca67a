"""Auto's pieces by value: the candidate vocabulary and the default set, the early-stopping split of whole
groups, and eval's relevance of two modalities that only share concepts (no row holds both)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import modalign
from modalign.align.auto import (
    CANDIDATES,
    NOT_BY_DEFAULT,
    SEMI_CANDIDATES,
    _inner_split,
    auto_options,
    best_first,
    candidate_context,
    cross_validate,
    fit_auto,
    group_folds,
    select_candidates,
)
from modalign.align.fit import fit_arrays
from modalign.align.methods import METHODS, FitContext
from modalign.align.train_data import TrainData
from modalign.align.trainer import TrainerSettings, chance_r_at_1
from modalign.evaluation.evaluate import _group_relevance


def test_the_default_set_is_the_36_closed_forms() -> None:
    default = {c.name for c in select_candidates(None)}
    cca = {f"cca(reg={r},power={p}){s}" for r in (0.1, 0.3, 0.6, 0.8) for p in (0.0, 1.0, 2.0, 4.0)
           for s in ("", "+l2")}
    procrustes = {f"procrustes(whiten={w}){s}" for w in (True, False) for s in ("", "+l2")}
    assert default == cca | procrustes
    assert len(default) == 36
    assert not default & NOT_BY_DEFAULT
    # by name only: the trained ones, ridge and the PCA-whitening conditionings
    assert {"infonce+l2", "siglip+l2", "infonce+structure+l2", "ridge(alpha=0.1)", "ridge(alpha=1.0)+l2",
            "cca(reg=0.1,power=1.0)+whiten0.3", "procrustes(whiten=True)+whiten0.6"} <= NOT_BY_DEFAULT
    assert set(CANDIDATES) == default | NOT_BY_DEFAULT
    semi = {c.name for c in SEMI_CANDIDATES}
    assert semi == {f"semi-cca(reg={r},ot=0.0)" for r in (0.6, 0.8, 0.9)} | {
        f"semi-cca(reg={r},ot={o},rounds={n})" for r in (0.6, 0.8, 0.9) for o in (0.5, 1.0) for n in (1, 3)}
    assert semi <= NOT_BY_DEFAULT  # fit_auto adds them when there are unpaired rows
    assert len(CANDIDATES) == 5 * (2 + 16 + 2) + 3 + 15
    three = CANDIDATES["semi-cca(reg=0.8,ot=1.0,rounds=3)"]
    assert (three.method, three.options, three.input_norm, three.trained) == (
        "semi-cca", {"reg": 0.8, "ot": 1.0, "rounds": 3}, "center", False)
    one = CANDIDATES["cca(reg=0.6,power=2.0)+l2"]
    assert (one.method, one.options, one.input_norm, one.trained) == ("cca", {"reg": 0.6, "power": 2.0}, "l2", False)
    two = CANDIDATES["procrustes(whiten=False)+whiten0.1"]
    assert (two.method, two.options, two.input_norm) == ("procrustes", {"whiten": False}, "whiten:0.1")
    assert CANDIDATES["ridge(alpha=1.0)"].options == {"alpha": 1.0, "whiten": False}
    assert CANDIDATES["infonce+structure+l2"].options == {"structure": 1.0} and CANDIDATES["siglip+l2"].trained


def _data(groups: np.ndarray) -> TrainData:
    n = len(groups)
    return TrainData(features={"a": np.arange(n, dtype=np.float32)[:, None]}, present={"a": np.ones(n, bool)},
                     groups=groups)


def test_inner_split_carves_whole_groups_seeded() -> None:
    groups = np.repeat(np.arange(50), 3)  # 50 groups of 3 rows
    train, val = _inner_split(_data(groups), seed=0)
    assert val is not None
    assert len(np.unique(val.groups)) == 5  # 10% of the groups
    assert not set(train.groups) & set(val.groups)  # no group on both sides
    assert len(train) + len(val) == 150 and len(val) == 15
    rows = np.concatenate([train.features["a"][:, 0], val.features["a"][:, 0]])
    assert sorted(rows.tolist()) == list(range(150))  # every row once, its features with it
    np.testing.assert_array_equal(val.groups, val.features["a"][:, 0].astype(int) // 3)
    again = _inner_split(_data(groups), seed=0)[1]
    other = _inner_split(_data(groups), seed=1)[1]
    assert again is not None and other is not None
    np.testing.assert_array_equal(again.groups, val.groups)
    assert set(other.groups) != set(val.groups)
    # too few groups to spare two for validation, or to keep two for training: no split
    for n_groups in (10, 14):
        train, none = _inner_split(_data(np.arange(n_groups)), seed=0)
        assert none is None and len(train) == n_groups
    assert _inner_split(_data(np.arange(20)), seed=0, fraction=0.1)[1] is not None
    assert _inner_split(_data(np.arange(3)), seed=0, fraction=0.9)[1] is None
    assert _inner_split(_data(np.arange(4)), seed=0, fraction=0.5)[1] is not None  # two groups each side


def test_group_relevance_of_modalities_held_by_different_rows() -> None:
    """Rows 0-2 hold images (items 0, 1, 2), rows 3-6 texts (items 0, 1, 2, 0); groups say which concept.
    Item text 0 appears under groups 'cat' and 'dog'; 'bird' has an image but no text: not a query."""
    groups = np.array(["cat", "dog", "bird", "cat", "dog", "fish", "dog"], dtype=object)
    ra = np.array([0, 1, 2, -1, -1, -1, -1])  # image item of each row (-1: no image)
    rb = np.array([-1, -1, -1, 0, 1, 2, 0])  # text item of each row
    rows, qa, gb, rel = _group_relevance(ra, rb, groups)
    np.testing.assert_array_equal(rows, [0, 1, 3, 4, 6])  # only concepts both modalities show
    np.testing.assert_array_equal(qa, [0, 1])
    np.testing.assert_array_equal(gb, [0, 1])
    # image 0 (cat): text 0 (cat, dog); image 1 (dog): text 0 (also dog) and text 1 (dog)
    np.testing.assert_array_equal(rel, [[True, False], [True, True]])
    assert _group_relevance(ra, rb, np.array(["a", "a", "a", "b", "b", "b", "b"], dtype=object)) is None


def test_best_first_ranks_by_mean_then_by_the_smaller_spread() -> None:
    rows = [{"candidate": "a", "mean": 0.30, "std": 0.02}, {"candidate": "b", "mean": 0.40, "std": 0.10},
            {"candidate": "c", "mean": 0.40, "std": 0.01}, {"candidate": "d", "mean": 0.40, "std": 0.01}]
    assert [r["candidate"] for r in best_first(rows)] == ["c", "d", "b", "a"]


def test_auto_options_rename_warn_and_refuse_unknown_names() -> None:
    with pytest.warns(DeprecationWarning, match="'folds' is now 'cv_folds'"):
        assert auto_options({"folds": 2, "anchor": "a"}) == {"cv_folds": 2, "anchor": "a"}
    with pytest.warns(DeprecationWarning, match="'budget_s' is now 'time_budget'"):
        assert auto_options({"budget_s": 5.0, "time_budget": 9.0}) == {"time_budget": 9.0}  # the new name wins
    assert auto_options({"candidates": "cca", "cv_folds": 4}) == {"candidates": "cca", "cv_folds": 4}
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['nope'\]; it takes anchor, candidates, cv_folds, "
                                         r"time_budget"):
        auto_options({"nope": 1, "cv_folds": 2})


def _planted_features(n_groups: int = 60, seed: int = 0) -> tuple[dict, dict, list[str]]:
    rng = np.random.default_rng(seed)
    concepts = rng.normal(size=(n_groups, 8))
    group = np.repeat(np.arange(n_groups), 2)
    a = concepts[group] @ rng.normal(size=(8, 20)) + 0.2 * rng.normal(size=(len(group), 20))
    b = concepts[group] @ rng.normal(size=(8, 12)) + 0.2 * rng.normal(size=(len(group), 12))
    ones = np.ones(len(group), dtype=bool)
    return ({"a": {"x": a.astype(np.float32)}, "b": {"x": b.astype(np.float32)}}, {"a": ones, "b": ones},
            [f"g{g}" for g in group])


def test_fit_auto_uses_its_options_and_records_the_choice() -> None:
    feats, present, groups = _planted_features()
    fitted = fit_arrays(feats, present, groups, ["a", "b"], default_layers={"a": "x", "b": "x"}, method="auto",
                        dim=8, val_fraction=0.1,
                        options={"cv_folds": 2, "candidates": "procrustes,cca(reg=0.1,power=1.0)"})
    summary = fitted.info["auto"]
    assert summary["folds"] == 2 and {r["candidate"] for r in summary["table"]} == {
        "procrustes(whiten=True)", "procrustes(whiten=False)", "procrustes(whiten=True)+l2",
        "procrustes(whiten=False)+l2", "cca(reg=0.1,power=1.0)"}
    ranked = best_first([r for r in summary["table"] if "mean" in r])
    assert summary["picked"] == ranked[0]["candidate"] and summary["runner_up"]["candidate"] == ranked[1]["candidate"]
    assert summary["cv_R@1"] == ranked[0]["mean"] > 0.5  # planted pairs: found across folds
    assert summary["cv_rows"] == len(groups) and summary["time_dependent"] is False
    assert fitted.info["val_R@1"] == summary["cv_R@1"]  # a closed form: the CV mean is the estimate
    with pytest.raises(ValueError, match="no candidate left to try"):
        fit_arrays(feats, present, groups, ["a", "b"], default_layers={"a": "x", "b": "x"}, method="auto",
                   head="mlp", options={"candidates": "cca"})


def test_a_conditioning_that_fails_on_one_fold_is_dropped_and_auto_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import modalign.align.auto as auto

    real = auto._grid_scores

    def failing(ctx: Any, family: Any, train: Any, val: Any) -> Any:
        if family[0].input_norm == "center":
            raise np.linalg.LinAlgError("SVD did not converge")
        return real(ctx, family, train, val)

    monkeypatch.setattr(auto, "_grid_scores", failing)
    feats, present, groups = _planted_features(seed=1)
    fitted = fit_arrays(feats, present, groups, ["a", "b"], default_layers={"a": "x", "b": "x"}, method="auto",
                        dim=8, val_fraction=0.1)
    table = fitted.info["auto"]["table"]
    assert all("SVD did not converge" in r["skipped"] for r in table if r["input_norm"] == "center")
    assert fitted.info["auto"]["picked"].endswith("+l2")


def test_the_grid_falls_back_to_another_svd_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    import modalign.align.closed_form_grid as grid_module
    from modalign.align.closed_form import cca_pair
    from modalign.align.closed_form_grid import PairGrid

    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(200, 5))
    a, b = a - a.mean(0), b - b.mean(0)

    def no_convergence(*_args: Any, **_kwargs: Any) -> Any:
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(grid_module.np.linalg, "svd", no_convergence)
    ga, gb = PairGrid(a, b, dim=4).matrices("cca", {"reg": 0.3, "power": 1.0})
    monkeypatch.undo()
    ca, cb = cca_pair(a, b, 4, 0.3, 1.0)
    np.testing.assert_allclose(a @ ga @ (b @ gb).T, a @ ca @ (b @ cb).T, atol=1e-8)


def _ctx(feats: dict, present: dict, groups: list[str], val_groups: int = 0, **settings: Any) -> FitContext:
    """A FitContext over planted rows; the last ``val_groups`` groups are its validation rows."""
    ids = np.array([int(g[1:]) for g in groups])
    cut = ids.max() + 1 - val_groups
    def part(mask: np.ndarray) -> TrainData:
        return TrainData(features={m: feats[m]["x"][mask] for m in feats}, present={m: present[m][mask] for m in feats},
                         groups=ids[mask])
    return FitContext(modalities=["a", "b"], train=part(ids < cut), val=part(ids >= cut) if val_groups else None,
                      dim=8, settings=TrainerSettings(**settings))


def test_fit_auto_refits_a_closed_form_on_train_and_validation_rows_and_records_it_all(
        caplog: pytest.LogCaptureFixture) -> None:
    feats, present, groups = _planted_features(n_groups=40, seed=3)
    ctx = replace(_ctx(feats, present, groups, val_groups=8), options={"candidates": "cca(reg=0.1,power=1.0),"
                                                                       "procrustes(whiten=True)", "cv_folds": 3})
    with caplog.at_level(logging.INFO, logger="modalign.align.auto"):
        heads, info = fit_auto(ctx)
    summary = info["auto"]
    ranked = best_first([r for r in summary["table"] if "mean" in r])
    best, second = ranked
    assert summary["picked"] == best["candidate"] and summary["cv_R@1"] == best["mean"]
    assert summary["cv_std"] == best["std"] and summary["cv_directions"] == best["directions"]
    assert summary["chance_R@1"] == best["chance"]
    assert summary["runner_up"] == {"candidate": second["candidate"], "cv_R@1": second["mean"], "cv_std": second["std"]}
    assert summary["cv_rows"] == 80 and summary["folds"] == 3 and summary["time_dependent"] is False
    assert 0 < summary["cv_seconds"] < 60
    assert info["val_R@1"] == best["mean"]
    assert any(f"auto: picked {best['candidate']}, CV R@1 {best['mean']:.3f}" in r.getMessage() for r in caplog.records)
    # the refit saw the validation rows too: the same heads as the winner fitted on all 80 rows at once
    cand = CANDIDATES[best["candidate"]]
    everything = TrainData(features={m: np.concatenate([ctx.train.features[m], ctx.val.features[m]]) for m in "ab"},
                           present={m: np.ones(80, bool) for m in "ab"},
                           groups=np.concatenate([ctx.train.groups, ctx.val.groups]))
    direct, _ = METHODS.get(cand.method)(candidate_context(ctx, cand, everything, None))
    x = torch.as_tensor(feats["a"]["x"])
    torch.testing.assert_close(heads["a"](x), direct["a"](x))
    # one candidate: no runner-up
    _, alone = fit_auto(replace(ctx, options={"candidates": "cca(reg=0.1,power=1.0)", "cv_folds": 2}))
    assert alone["auto"]["runner_up"] is None and alone["auto"]["cv_rows"] == 80


def test_cross_validation_subsamples_at_most_max_cv_rows_seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    import modalign.align.auto as auto

    feats, present, groups = _planted_features(n_groups=50, seed=4)
    ctx = _ctx(feats, present, groups, val_groups=10)
    cands = [CANDIDATES["cca(reg=0.1,power=1.0)"]]
    seen: list[np.ndarray] = []
    real = auto.group_folds

    def recording(groups_: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
        seen.append(np.array(groups_))
        return real(groups_, k, seed)

    monkeypatch.setattr(auto, "group_folds", recording)
    monkeypatch.setattr(auto, "MAX_CV_ROWS", 60)
    first = cross_validate(ctx, cands, folds=2)
    again = cross_validate(ctx, cands, folds=2)
    assert len(seen[0]) == 60
    np.testing.assert_array_equal(seen[0], seen[1])  # seeded: the same rows every time
    assert first[0]["folds"] == again[0]["folds"]
    expected = np.random.default_rng(0).choice(100, 60, replace=False)
    pool_groups = np.concatenate([ctx.train.groups, ctx.val.groups])
    np.testing.assert_array_equal(seen[0], pool_groups[np.sort(expected)])  # train then val rows, no repeats
    monkeypatch.setattr(auto, "MAX_CV_ROWS", 100)
    cross_validate(ctx, cands, folds=2)
    np.testing.assert_array_equal(seen[-1], pool_groups)  # not above the cap: every row, train then val


def test_a_trained_candidate_gets_the_step_schedule_and_its_own_early_stopping_rows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import modalign.align.auto as auto

    feats, present, groups = _planted_features(n_groups=40, seed=5)
    ctx = replace(_ctx(feats, present, groups), options={"anchor": "b", "ignored": 1})
    infonce, cca = CANDIDATES["infonce+l2"], CANDIDATES["cca(reg=0.3,power=2.0)"]
    narrowed = candidate_context(replace(ctx, progress=lambda *_: None), infonce, ctx.train, None)
    assert narrowed.settings.steps == "auto" and narrowed.input_norm == "l2" and narrowed.progress is None
    assert narrowed.options == {**infonce.options, "anchor": "b"}
    given = candidate_context(replace(ctx, settings=TrainerSettings(steps=7, lr=0.5)), infonce, ctx.train, None)
    assert given.settings.steps == 7 and given.settings.lr == 0.5
    closed = candidate_context(replace(ctx, settings=TrainerSettings(lr=0.5)), cca, ctx.train, ctx.train)
    assert closed.settings.steps is None and closed.settings.lr == 0.5 and closed.val is ctx.train
    assert closed.options == {"reg": 0.3, "power": 2.0, "anchor": "b"}

    calls: list[FitContext] = []
    monkeypatch.setattr(METHODS, "get", lambda name: lambda c: calls.append(c) or ({}, {}))
    auto._fit_candidate(ctx, infonce, ctx.train, seed=3)  # no early stopping asked: every row trains
    assert calls[-1].val is None and len(calls[-1].train) == len(ctx.train)
    stopping = replace(ctx, settings=TrainerSettings(restore_best=True))
    auto._fit_candidate(stopping, infonce, ctx.train, seed=3)
    inner_train, inner_val = _inner_split(ctx.train, 3)
    assert inner_val is not None and len(calls[-1].val) == len(inner_val) == 8
    np.testing.assert_array_equal(calls[-1].train.groups, inner_train.groups)
    auto._fit_candidate(stopping, cca, ctx.train, seed=3)  # a closed form never holds rows back
    assert calls[-1].val is None and len(calls[-1].train) == len(ctx.train)


def test_no_candidate_cross_validated_names_the_first_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    import modalign.align.auto as auto

    feats, present, groups = _planted_features(n_groups=20, seed=6)
    table = [{"candidate": f"c{i}", "skipped": f"reason {i}"} for i in range(5)]
    monkeypatch.setattr(auto, "cross_validate", lambda *a, **k: table)
    with pytest.raises(ValueError, match=r"^auto: no candidate could be cross-validated \(c0: reason 0; c1: reason 1; "
                                         r"c2: reason 2\)$"):
        fit_auto(_ctx(feats, present, groups))


def test_concat_keeps_both_parts_in_order() -> None:
    from modalign.align.auto import _concat

    a, b = _data(np.array([0, 0, 1])), _data(np.array([2, 3]))
    both = _concat(a, b)
    assert both.groups.tolist() == [0, 0, 1, 2, 3] and both.features["a"][:, 0].tolist() == [0, 1, 2, 0, 1]
    assert _concat(a, None) is a and _concat(a, _data(np.array([], dtype=np.int64))) is a


def test_cross_validation_reports_progress_logs_and_clock_by_value(caplog: pytest.LogCaptureFixture) -> None:
    feats, present, groups = _planted_features(n_groups=30, seed=7)
    present = {"a": present["a"], "b": present["b"].copy()}
    present["b"][::5] = False  # rows without b: chance counts only the rows that hold both
    ctx = _ctx(feats, present, groups)
    cands = [CANDIDATES["cca(reg=0.1,power=1.0)"], CANDIDATES["cca(reg=0.3,power=1.0)"]]
    calls: list[tuple[str, int, int]] = []
    with caplog.at_level(logging.INFO, logger="modalign.align.auto"):
        table = cross_validate(ctx, cands, folds=2, clock=lambda: 0.0,
                               progress=lambda stage, done, total: calls.append((stage, done, total)))
    assert calls == [("cross-validate", 2, 4), ("cross-validate", 4, 4)]
    logged = [r.getMessage() for r in caplog.records if "cross-validation" in r.getMessage()]
    assert logged == ["auto: cross-validation 50% (2 candidates × 2 folds)",
                      "auto: cross-validation 100% (2 candidates × 2 folds)"]
    assert [r["seconds"] for r in table] == [0.0, 0.0]  # a frozen clock: nothing is timed
    pool = ctx.train
    both = pool.present["a"] & pool.present["b"]
    expected = [chance_r_at_1(pool.groups[rows][both[rows]]) for rows in group_folds(pool.groups, 2, 0)]
    assert table[0]["chance"] == pytest.approx(float(np.mean(expected)))
    with pytest.raises(ValueError, match=r"^auto: cross-validation needs at least 2 training groups, got 1$"):
        one = TrainData(features=pool.features, present=pool.present, groups=np.zeros(len(pool), np.int64))
        cross_validate(replace(ctx, train=one), cands, folds=2)


def test_select_candidates_all_names_and_refusal() -> None:
    assert [c.name for c in select_candidates("all")] == [c.name for c in select_candidates(None)]
    methods = ", ".join(sorted({c.method for c in CANDIDATES.values()}))
    first = next(iter(CANDIDATES))
    with pytest.raises(ValueError) as err:
        select_candidates("cca,nope")
    assert str(err.value) == (f"auto: unknown candidate 'nope'; give a method ({methods}) or a candidate name such "
                              f"as {first!r}")


def test_a_deprecated_option_warns_at_the_callers_line() -> None:
    feats, present, groups = _planted_features(n_groups=20, seed=8)
    with pytest.warns(DeprecationWarning, match="'folds' is now 'cv_folds'") as caught:
        fit_arrays(feats, present, groups, ["a", "b"], default_layers={"a": "x", "b": "x"}, method="auto", dim=4,
                   val_fraction=0.0, options={"folds": 2, "candidates": "cca(reg=0.1,power=1.0)"})
    # it names the first line outside modalign (here this file), not a line of modalign's own
    package = Path(modalign.__file__).parent.resolve()
    assert package not in Path(caught[0].filename).resolve().parents


def test_a_non_linear_head_keeps_the_trained_candidates_only() -> None:
    feats, present, groups = _planted_features(n_groups=20, seed=9)
    fitted = fit_arrays(feats, present, groups, ["a", "b"], default_layers={"a": "x", "b": "x"}, method="auto",
                        head="mlp", dim=4, val_fraction=0.0, settings=TrainerSettings(steps=3, batch_size=16),
                        options={"candidates": "infonce+l2,cca(reg=0.1,power=1.0)", "cv_folds": 2})
    assert [r["candidate"] for r in fitted.info["auto"]["table"]] == ["infonce+l2"]
    with pytest.raises(ValueError, match=r"^auto: no candidate left to try$"):
        fit_arrays(feats, present, groups, ["a", "b"], default_layers={"a": "x", "b": "x"}, method="auto",
                   head="mlp", options={"candidates": "cca"})


def test_a_trained_winner_is_refitted_on_the_training_rows_and_stops_on_the_validation_rows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import modalign.align.auto as auto

    feats, present, groups = _planted_features(n_groups=30, seed=10)
    progress = lambda *_: None  # noqa: E731
    ctx = replace(_ctx(feats, present, groups, val_groups=6), options={"candidates": "infonce+l2,procrustes"},
                  progress=progress)
    real_heads, _ = METHODS.get("cca")(replace(ctx, options={}))
    row = {"folds": [0.5, 0.5], "mean": 0.5, "std": 0.0, "directions": {}, "chance": 0.1}
    table = [{"candidate": "infonce+l2", **row}, {"candidate": "procrustes(whiten=True)", **row, "mean": 0.4}]
    monkeypatch.setattr(auto, "cross_validate", lambda *a, **k: table)
    refits: list[FitContext] = []
    real_get = METHODS.get
    monkeypatch.setattr(METHODS, "get", lambda name: (lambda c: refits.append(c) or (real_heads, {}))
                        if name in ("infonce", "procrustes") else real_get(name))
    _, info = fit_auto(ctx)
    refit = refits[-1]
    assert refit.train is ctx.train and refit.val is ctx.val and refit.progress is progress
    assert info["val_R@1"] == ctx.val_score(real_heads) != 0.5  # a trained winner is scored on the val rows
    assert info["auto"]["cv_rows"] == 60
    table[0]["mean"] = 0.3  # now Procrustes wins: a closed form refits on train + val, without early stopping
    _, info = fit_auto(ctx)
    refit = refits[-1]
    assert len(refit.train) == 60 and refit.val is None and refit.progress is progress
    assert info["val_R@1"] == 0.4
    _, info = fit_auto(replace(ctx, val=None))
    assert info["auto"]["cv_rows"] == 48  # no validation rows: the training rows alone


def test_warn_deprecated_names_the_first_line_outside_modalign() -> None:
    from modalign._deprecation import warn_deprecated

    def inside_modalign() -> None:  # a frame of this file: the first one outside the package
        warn_deprecated("old")

    with pytest.warns(DeprecationWarning, match="^old$") as caught:
        inside_modalign()
    assert caught[0].filename == __file__ and caught[0].lineno == inside_modalign.__code__.co_firstlineno + 1


def test_ridge_asked_for_by_name_is_cross_validated_with_two_modalities() -> None:
    """Ridge has no place in the two-modality grid (``PairGrid``): it is fitted fold by fold like the n-modal
    closed forms, instead of stopping every candidate of its conditioning."""
    rng = np.random.default_rng(40)
    z = rng.normal(size=(90, 4))
    data = TrainData(features={"a": (z @ rng.normal(size=(4, 6))).astype(np.float32),
                               "b": (z @ rng.normal(size=(4, 5))).astype(np.float32)},
                     present={"a": np.ones(90, bool), "b": np.ones(90, bool)}, groups=np.arange(90) // 3)
    ctx = FitContext(modalities=["a", "b"], train=data, val=None, dim=4)
    table = cross_validate(ctx, select_candidates("ridge,cca(reg=0.1,power=1.0)"), folds=3)
    rows = {r["candidate"]: r for r in table}
    assert set(rows) == {"ridge(alpha=0.1)", "ridge(alpha=1.0)", "ridge(alpha=0.1)+l2", "ridge(alpha=1.0)+l2",
                         "cca(reg=0.1,power=1.0)"}
    assert all("skipped" not in r and len(r["folds"]) == 3 and r["mean"] > 0.5 for r in rows.values()), rows
