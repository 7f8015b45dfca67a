"""semi-cca and unpaired items: the transport plan, the teacher equal to CCA when there is nothing unpaired,
a constructed case where unpaired items lift held-out R@1 and auto sees it, folds that never score an
unpaired row, and ``fit(unpaired=...)``: held-out items kept out, refusals, a bit-identical save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.views import three_views
from modalign.align import auto
from modalign.align.closed_form import ClosedFormSettings, cca_pair, conditioned, fit_closed_form
from modalign.align.closed_form_grid import PairGrid
from modalign.align.fit import fit, fit_arrays
from modalign.align.methods import FitContext
from modalign.align.model import load
from modalign.align.semi_supervised import SemiCCA, fit_semi_cca, sinkhorn_plan
from modalign.align.trainer import TrainData
from modalign.data.dataset import PairedDataset
from modalign.data.unpaired import HeldOutItems, with_unpaired


def test_the_plan_has_uniform_marginals_and_follows_a_clear_matching() -> None:
    rng = np.random.default_rng(0)
    sim = rng.uniform(-1, 1, size=(30, 20))
    plan = sinkhorn_plan(sim)
    np.testing.assert_allclose(plan.sum(1), 1 / 30, rtol=1e-3)
    np.testing.assert_allclose(plan.sum(0), 1 / 20, rtol=1e-6)
    perm = rng.permutation(25)
    clear = np.full((25, 25), -0.5)
    clear[np.arange(25), perm] = 0.9
    plan = sinkhorn_plan(clear)
    assert (plan.argmax(1) == perm).all() and plan[np.arange(25), perm].sum() > 0.99


def _views(n: int, seed: int, noise: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Two views of a 20-d latent: 200-d and 150-d, each with noise of growing scale per feature."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 20))
    ma, mb = np.random.default_rng(1).normal(size=(20, 200)), np.random.default_rng(2).normal(size=(20, 150))
    a = z @ ma + noise * rng.normal(size=(n, 200)) * np.linspace(0.2, 3, 200)
    b = z @ mb + noise * rng.normal(size=(n, 150)) * np.linspace(0.2, 3, 150)
    return a.astype(np.float32), b.astype(np.float32)


def test_without_unpaired_items_the_teacher_is_cca() -> None:
    a, b = (x.astype(np.float64) for x in _views(120, 3))
    a, b = a - a.mean(0), b - b.mean(0)
    none_a, none_b = a[:0], b[:0]
    semi = SemiCCA(a, b, none_a, none_b, dim=16)
    for reg, power in ((0.3, 1.0), (0.8, 2.0)):
        ma, mb = cca_pair(a, b, 16, reg, power)
        sa, sb = semi.matrices(reg, power, ot=1.0, rounds=3)  # nothing to match: ot changes nothing
        # columns may flip sign together on both sides: compare the cross-modal similarities
        np.testing.assert_allclose((a @ sa) @ (b @ sb).T, (a @ ma) @ (b @ mb).T, atol=1e-6)
    assert not semi.matches_unpaired


def test_the_covariances_come_from_every_item_and_the_cross_covariance_from_the_pairs() -> None:
    a, b = (x.astype(np.float64) for x in _views(300, 4))
    a, b = a - a.mean(0), b - b.mean(0)
    semi = SemiCCA(a[:100], b[:100], a[100:], b[100:0], dim=8)
    w, v = semi.eigh("a")
    np.testing.assert_allclose((v * w) @ v.T, a.T @ a / 300, atol=1e-9)
    w, v = semi.eigh("b")
    np.testing.assert_allclose((v * w) @ v.T, b[:100].T @ b[:100] / 100, atol=1e-9)
    np.testing.assert_allclose(semi.cross, a[:100].T @ b[:100] / 100)
    with pytest.raises(ValueError, match="ot is a weight in"):
        semi.matrices(ot=1.5)
    with pytest.raises(ValueError, match="at least 3 pairs"):
        SemiCCA(a[:2], b[:2], a[2:], b[2:], dim=8)


def _split_unpaired(a: np.ndarray, b: np.ndarray, n_pairs: int, seed: int = 5) -> tuple[dict, dict, list[str]]:
    """n_pairs paired rows, then every other row twice: once with a only, once with b only (shuffled), so the
    pairing of the unpaired items is hidden."""
    n_un = len(a) - n_pairs
    perm = np.random.default_rng(seed).permutation(n_un)
    fa = np.concatenate([a, np.zeros((n_un, a.shape[1]), np.float32)])
    fb = np.concatenate([b[:n_pairs], np.zeros((n_un, b.shape[1]), np.float32), b[n_pairs:][perm]])
    pa = np.r_[np.ones(len(a), bool), np.zeros(n_un, bool)]
    pb = np.r_[np.ones(n_pairs, bool), np.zeros(n_un, bool), np.ones(n_un, bool)]
    return {"a": {"x": fa}, "b": {"x": fb}}, {"a": pa, "b": pb}, [f"g{i}" for i in range(len(fa))]


def _held_out_r1(heads: dict, a: np.ndarray, b: np.ndarray) -> float:
    with torch.no_grad():
        za = torch.nn.functional.normalize(heads["a"](torch.as_tensor(a)), dim=1).numpy()
        zb = torch.nn.functional.normalize(heads["b"](torch.as_tensor(b)), dim=1).numpy()
    s = za @ zb.T
    return float(np.mean(s.argmax(1) == np.arange(len(s))) + np.mean(s.argmax(0) == np.arange(len(s)))) / 2


def test_unpaired_items_lift_held_out_recall_and_auto_picks_them() -> None:
    """80 pairs of two noisy views plus 1,500 unpaired items per side: the default fit with them beats the
    default fit without them on 400 held-out pairs, by CV's own choice."""
    a, b = _views(80 + 1500 + 400, 5)
    test = slice(1580, None)
    ones = np.ones(80, bool)
    alone = fit_arrays({"a": {"x": a[:80]}, "b": {"x": b[:80]}}, {"a": ones, "b": ones},
                       [f"g{i}" for i in range(80)], ["a", "b"], default_layers={"a": "x", "b": "x"},
                       method="auto", val_fraction=0.0)
    feats, present, groups = _split_unpaired(a[:1580], b[:1580], 80)
    both = fit_arrays(feats, present, groups, ["a", "b"], default_layers={"a": "x", "b": "x"}, method="auto",
                      val_fraction=0.0)
    assert not alone.info["auto"]["picked"].startswith("semi-cca")
    assert both.info["auto"]["picked"].startswith("semi-cca(") and "ot=1.0" in both.info["auto"]["picked"]
    before, after = _held_out_r1(alone.heads, a[test], b[test]), _held_out_r1(both.heads, a[test], b[test])
    assert after > before + 0.15, (before, after)
    assert both.info["unpaired"] == {"a": 1500, "b": 1500} and "unpaired_lead_too_small" not in both.info["auto"]


def _train_data(n_pairs: int, n_alone: int) -> TrainData:
    rng = np.random.default_rng(6)
    n = n_pairs + n_alone
    present_b = np.r_[np.ones(n_pairs, bool), np.zeros(n_alone, bool)]
    return TrainData(features={"a": rng.normal(size=(n, 4)).astype(np.float32),
                               "b": rng.normal(size=(n, 3)).astype(np.float32)},
                     present={"a": np.ones(n, bool), "b": present_b},
                     groups=np.array([f"g{i // 2}" for i in range(n_pairs)] + [f"u{i}" for i in range(n_alone)]))


def test_unpaired_rows_of_a_scored_concept_sit_out_that_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _train_data(60, 25)
    data.groups[60:70] = [f"g{i}" for i in range(10)]  # ten unpaired items of paired concepts g0..g9
    seen: list[TrainData] = []
    scored: list[TrainData] = []

    def fit_and_record(ctx: FitContext) -> tuple[dict, dict]:
        seen.append(ctx.train)
        return {}, {}

    def record(heads: dict, val: TrainData, pairs: list) -> dict[str, float]:
        scored.append(val)
        return {"a->b": 0.5, "b->a": 0.5}

    monkeypatch.setattr(auto, "METHODS", type("Methods", (), {"get": staticmethod(lambda name: fit_and_record)}))
    monkeypatch.setattr(auto, "validation_scores", record)
    ctx = FitContext(modalities=["a", "b"], train=data, val=None, dim=2)
    auto.cross_validate(ctx, [auto.CANDIDATES["semi-cca(reg=0.8,ot=0.0)"]], folds=3)
    for train, val in zip(seen, scored, strict=True):
        alone = ~train.present["b"]
        assert not set(train.groups[alone]) & set(val.groups)  # none of the scored concepts trains unpaired
        own = {f"g{i}" for i in range(10)} - set(val.groups)
        assert own <= set(train.groups[alone])  # the others do
        assert {f"u{i}" for i in range(10, 25)} <= set(train.groups[alone])


def test_unpaired_rows_train_in_every_fold_and_are_never_scored(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _train_data(60, 25)
    seen: list[tuple[TrainData, TrainData]] = []

    def record(heads: dict, val: TrainData, pairs: list) -> dict[str, float]:
        return {"a->b": 0.5, "b->a": 0.5}

    def fit_and_record(ctx: FitContext) -> tuple[dict, dict]:
        seen.append(ctx.train)
        return {}, {}

    class Methods:
        @staticmethod
        def get(name: str):
            return fit_and_record

    monkeypatch.setattr(auto, "METHODS", Methods)
    monkeypatch.setattr(auto, "validation_scores", record)
    ctx = FitContext(modalities=["a", "b"], train=data, val=None, dim=2)
    table = auto.cross_validate(ctx, [auto.CANDIDATES["semi-cca(reg=0.8,ot=0.0)"]], folds=3)
    assert len(seen) == 3 and len(table[0]["folds"]) == 3
    alone = {f"u{i}" for i in range(25)}
    train_groups = [set(t.groups) for t in seen]
    assert all(alone <= g for g in train_groups)  # every unpaired row trains in every fold
    paired_seen = [g - alone for g in train_groups]
    all_paired = {f"g{i}" for i in range(30)}
    # each paired group is held back (scored) in exactly one fold
    held = [all_paired - g for g in paired_seen]
    assert set().union(*held) == all_paired and sum(len(h) for h in held) == 30


def test_auto_adds_the_semi_candidates_only_with_enough_unpaired_rows() -> None:
    few = FitContext(modalities=["a", "b"], train=_train_data(60, auto.MIN_UNPAIRED - 1), val=None, dim=2)
    many = FitContext(modalities=["a", "b"], train=_train_data(60, auto.MIN_UNPAIRED), val=None, dim=2)
    assert auto.unpaired_items(few) == auto.MIN_UNPAIRED - 1 and auto.unpaired_items(many) == auto.MIN_UNPAIRED
    _, info_few = auto.fit_auto(few)
    _, info_many = auto.fit_auto(many)
    semi = {c.name for c in auto.SEMI_CANDIDATES}
    default = {c.name for c in auto.select_candidates(None)}
    assert {r["candidate"] for r in info_few["auto"]["table"]} == default
    assert {r["candidate"] for r in info_many["auto"]["table"]} == default | semi  # added to, not instead of
    # "all" is the default set by its other name
    _, info_all = auto.fit_auto(FitContext(modalities=["a", "b"], train=_train_data(60, auto.MIN_UNPAIRED),
                                           val=None, dim=2, options={"candidates": "all"}))
    assert {r["candidate"] for r in info_all["auto"]["table"]} == default | semi
    # named candidates are the user's choice: no semi-cca is added to them
    _, named = auto.fit_auto(FitContext(modalities=["a", "b"], train=_train_data(60, 40), val=None, dim=2,
                                        options={"candidates": "cca"}))
    assert not semi & {r["candidate"] for r in named["auto"]["table"]}


# ------------------------------------------------------------------ fit(unpaired=...): the data side
def _dataset(rows: list[dict]) -> PairedDataset:
    return PairedDataset.from_rows(rows, root=Path.cwd(), on_error="fail")


def _vec_rows(a: np.ndarray, b: np.ndarray | None, start: int, group: str = "g") -> list[dict]:
    rows = []
    for i, va in enumerate(a):
        row = {"id": f"r{start + i}", "group": f"{group}{start + i}", "vec_a": va.tolist()}
        if b is not None:
            row["vec_b"] = b[i].tolist()
        rows.append(row)
    return rows


def test_held_out_items_and_groups_never_join_the_unpaired_rows() -> None:
    a, b = _views(40, 7)
    a, b = a[:, :6], b[:, :5]
    paired = _dataset(_vec_rows(a[:20], b[:20], 0))
    train, test = paired.split(0.5, seed=0)
    test_a = np.array([test.columns["vec_a"][i] for i in range(len(test))])
    corpus_rows = _vec_rows(test_a[:3], None, 100, group="c")  # three held-out images under new ids and groups
    corpus_rows += [{"id": "same-group", "group": test.groups[4], "vec_a": a[30].tolist()}]  # a held-out group
    corpus_rows += _vec_rows(a[31:36], None, 200, group="c")  # five new items
    corpus_rows += [{"id": f"t{i}", "group": f"t{i}", "vec_b": b[36 + i].tolist()} for i in range(4)]
    corpus = _dataset(corpus_rows)
    combined, report = with_unpaired(train, corpus, ["vec_a", "vec_b"], held_out=test)
    assert report.kept == {"vec_a": 5, "vec_b": 4} and report.dropped_held_out == 4
    assert len(combined) == len(train) + 9
    held = {tuple(v) for v in test.columns["vec_a"]}
    assert not held & {tuple(v) for v in combined.columns["vec_a"] if v is not None}
    assert not set(test.groups) & set(combined.groups)
    # without held-out rows, the same corpus is taken whole
    _, everything = with_unpaired(train, corpus, ["vec_a", "vec_b"])
    assert everything.kept == {"vec_a": 9, "vec_b": 4} and everything.dropped_held_out == 0


def test_held_out_items_are_recognised_by_content_not_by_name(tmp_path: Path) -> None:
    (tmp_path / "held.png").write_bytes(b"held-out image bytes")
    (tmp_path / "copy.png").write_bytes(b"held-out image bytes")
    (tmp_path / "twin-size.png").write_bytes(b"other image of size!")  # same size, other bytes
    vector = np.arange(4, dtype=np.float32)
    held = HeldOutItems([tmp_path / "held.png", "A Red  Apple", vector, None, tmp_path / "gone.png"])
    assert tmp_path / "held.png" in held and tmp_path / "copy.png" in held
    assert tmp_path / "twin-size.png" not in held and tmp_path / "missing.png" not in held
    assert " a red apple\t" in held and "a red pear" not in held
    assert vector.copy() in held and vector.astype(np.float64) not in held and vector[::-1].copy() not in held


def test_an_unpaired_row_with_two_modalities_is_refused_by_name() -> None:
    a, b = _views(6, 8)
    train = _dataset(_vec_rows(a[:4, :3], b[:4, :3], 0))
    both = _dataset(_vec_rows(a[4:, :3], b[4:, :3], 10))
    with pytest.raises(ValueError, match="unpaired row 'r10' holds vec_a and vec_b"):
        with_unpaired(train, both, ["vec_a", "vec_b"])
    other = _dataset([{"id": "x", "text": "hello"}])
    with pytest.raises(ValueError, match="hold none of the modalities"):
        with_unpaired(train, other, ["vec_a", "vec_b"])


def test_a_model_fitted_with_unpaired_items_saves_and_loads_bit_identically(tmp_path: Path) -> None:
    a, b = _views(700, 9)
    paired = _dataset(_vec_rows(a[:80], b[:80], 0))
    perm = np.random.default_rng(1).permutation(np.arange(80, 700))
    corpus = _dataset([{"id": f"a{i}", "group": f"a{i}", "vec_a": a[i].tolist()} for i in range(80, 700)]
                      + [{"id": f"b{i}", "group": f"b{i}", "vec_b": b[i].tolist()} for i in perm])
    model = fit(paired, ["vec_a", "vec_b"], unpaired=corpus, cache=None, val_fraction=0.0)
    assert model.metrics["fit"]["auto"]["picked"].startswith("semi-cca")
    assert model.training["unpaired"]["kept"] == {"vec_a": 620, "vec_b": 620}
    model.save(tmp_path / "m")
    again = load(tmp_path / "m")
    assert again.training["unpaired"] == model.training["unpaired"]
    for m in ("vec_a", "vec_b"):
        x = torch.as_tensor(np.array(paired.columns[m]))
        with torch.no_grad():
            want, got = model.branches[m].head(x).numpy(), again.branches[m].head(x).numpy()
        assert want.tobytes() == got.tobytes()
        for key, value in model.branches[m].head.state_dict().items():
            assert torch.equal(value, again.branches[m].head.state_dict()[key]), key


def test_the_grid_fits_on_the_pairs_alone_when_unpaired_rows_train_beside_them() -> None:
    """A fold's grid (PairGrid) is fitted on the rows holding both modalities; the unpaired rows only move the
    conditioning. Three shared rows are enough for it, two are not."""
    a, b = _views(160, 10)
    a, b = a[:, :12], b[:, :10]
    train = TrainData(features={"a": a[:100], "b": np.where(np.arange(100)[:, None] < 60, b[:100], 0)},
                      present={"a": np.ones(100, bool), "b": np.arange(100) < 60}, groups=np.arange(100))
    val = TrainData(features={"a": a[100:], "b": b[100:]}, present={"a": np.ones(60, bool), "b": np.ones(60, bool)},
                    groups=np.arange(100, 160))
    ctx = FitContext(modalities=["a", "b"], train=train, val=None, dim=4)
    family = [auto.CANDIDATES["cca(reg=0.3,power=1.0)"], auto.CANDIDATES["procrustes(whiten=True)"]]
    got = auto._grid_scores(ctx, family, train, val)
    std, heads = conditioned(train.features, train.present, ["a", "b"], "center", ())
    grid = PairGrid(std["a"][:60], std["b"][:60], 4)
    with torch.no_grad():
        va, vb = (heads[m].standardize(torch.as_tensor(val.features[m])).numpy() for m in ("a", "b"))
    for cand, scores in zip(family, got, strict=True):
        ma, mb = grid.matrices(cand.method, cand.options)
        za, zb = (z / np.linalg.norm(z, axis=1, keepdims=True) for z in (va @ ma, vb @ mb))
        sim = za @ zb.T
        want = [float(np.mean(sim.argmax(1) == np.arange(60))), float(np.mean(sim.argmax(0) == np.arange(60)))]
        assert [scores["a->b"], scores["b->a"]] == pytest.approx(want), cand.name
    # b holds rows 0..3; a starts at row 1 (three shared rows) or at row 2 (two)
    three = TrainData(features=train.features, present={"a": np.arange(100) >= 1, "b": np.arange(100) < 4},
                      groups=train.groups)
    assert len(auto._grid_scores(ctx, family, three, val)) == 2
    two = TrainData(features=train.features, present={"a": np.arange(100) >= 2, "b": np.arange(100) < 4},
                    groups=train.groups)
    with pytest.raises(ValueError, match="'a' and 'b' share 2 rows in a fold"):
        auto._grid_scores(ctx, family, two, val)


def test_unpaired_items_count_only_with_two_modalities() -> None:
    data = _train_data(10, 5)
    third = TrainData(features={**data.features, "c": data.features["a"]},
                      present={**data.present, "c": np.ones(15, bool)}, groups=data.groups)
    assert auto.unpaired_items(FitContext(modalities=["a", "b"], train=data, val=data, dim=2)) == 10
    assert auto.unpaired_items(FitContext(modalities=["a", "b", "c"], train=third, val=None, dim=2)) == 0


def _row(name: str, mean: float, std: float) -> dict:
    return {"candidate": name, "mean": mean, "std": std, "folds": [mean] * 3}


def test_a_semi_supervised_lead_within_its_standard_error_goes_to_the_pairs_only_candidate() -> None:
    semi, plain = "semi-cca(reg=0.8,ot=1.0,rounds=3)", "cca(reg=0.3,power=4.0)"
    se = 0.03 / np.sqrt(3)
    close = auto.prefer_pairs_only([_row(semi, 0.40 + se - 1e-9, 0.03), _row(plain, 0.40, 0.01)])
    assert [r["candidate"] for r in close] == [plain, semi]
    clear = auto.prefer_pairs_only([_row(semi, 0.40 + se + 1e-9, 0.03), _row(plain, 0.40, 0.01)])
    assert [r["candidate"] for r in clear] == [semi, plain]
    lone = [_row(semi, 0.5, 0.1), _row("semi-cca(reg=0.6,ot=0.0)", 0.4, 0.1)]
    assert auto.prefer_pairs_only(lone) == lone  # nothing learnt from pairs alone to fall back on
    first = [_row(plain, 0.5, 0.1), _row(semi, 0.49, 0.0)]
    assert auto.prefer_pairs_only(first) == first
    assert auto.prefer_pairs_only([]) == []
    # a lead of exactly one standard error (0.25 = 0.5 / √4, exact in binary) is not enough
    even = [{**_row(semi, 0.75, 0.5), "folds": [0.75] * 4}, _row(plain, 0.5, 0.0)]
    assert [r["candidate"] for r in auto.prefer_pairs_only(even)] == [plain, semi]


def test_a_lead_too_small_is_recorded_and_the_pairs_only_candidate_refitted(monkeypatch: pytest.MonkeyPatch) -> None:
    real = auto.cross_validate
    semi = "semi-cca(reg=0.8,ot=1.0,rounds=3)"

    def semi_barely_ahead(*args: object, **kwargs: object) -> list[dict]:
        table = real(*args, **kwargs)
        top = max(r["mean"] for r in table if "mean" in r)
        row = next(r for r in table if r["candidate"] == semi)
        row.update(mean=top + 0.01, std=0.1)  # one standard error is 0.1 / √3 = 0.058
        return table

    monkeypatch.setattr(auto, "cross_validate", semi_barely_ahead)
    _, info = auto.fit_auto(FitContext(modalities=["a", "b"], train=_train_data(60, 40), val=None, dim=2))
    summary = info["auto"]
    assert not summary["picked"].startswith("semi-cca")
    record = summary["unpaired_lead_too_small"]
    assert record["candidate"] == semi and record["cv_R@1"] > summary["cv_R@1"]
    assert record["needed"] == pytest.approx(0.1 / np.sqrt(len(summary["table"][0]["folds"])))
    assert set(record) == {"candidate", "cv_R@1", "needed"}


def test_with_three_modalities_and_nothing_unpaired_it_is_closed_form_cca() -> None:
    """The anchor and its best-paired partner make the space, the third maps into it: with every row holding
    every modality that is exactly ``fit_closed_form``'s CCA (up to the sign of each canonical direction)."""
    x = three_views(n=400, seed=41)
    ones = np.ones(400, bool)
    data = TrainData(features=x, present={m: ones for m in x}, groups=np.arange(400))
    ctx = FitContext(modalities=["a", "b", "c"], train=data, val=None, dim=4,
                     options={"reg": 0.3, "power": 2.0, "ot": 1.0, "rounds": 3})
    semi, info = fit_semi_cca(ctx)
    cca = fit_closed_form(x, {m: ones for m in x}, ["a", "b", "c"], ClosedFormSettings("cca", dim=4, reg=0.3,
                                                                                       power=2.0))
    assert info["anchor"] == "a" and info["unpaired"] == {"a": 0, "b": 0}
    with torch.no_grad():
        z = {m: {name: h[m](torch.as_tensor(x[m])).numpy() for name, h in (("semi", semi), ("cca", cca))}
             for m in x}
    for q, t in (("a", "b"), ("a", "c"), ("b", "c")):
        np.testing.assert_allclose(z[q]["semi"] @ z[t]["semi"].T, z[q]["cca"] @ z[t]["cca"].T, atol=2e-3)
    with pytest.raises(ValueError, match="anchor 'z' is not one of the modalities"):
        fit_semi_cca(FitContext(modalities=["a", "b", "c"], train=data, val=None, dim=4, options={"anchor": "z"}))
