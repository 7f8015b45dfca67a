"""The ``eval --json`` dictionary, key by key (a contract: docs/architecture.md, "Contracts"), and
``evaluate`` handing its cache and options to ``evaluate_detailed``."""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modalign.align.fit import fit
from modalign.data.dataset import PairedDataset
from modalign.evaluation.evaluate import DirectionResult, EvalResult
from modalign.evaluation.hubness import Hubness

# the package re-exports the function ``evaluate``, which hides the module of the same name from attribute access
evaluate_module = importlib.import_module("modalign.evaluation.evaluate")


def _result(gaps: dict[str, float], by_group: list[str] | None = None, errors: int = 0) -> EvalResult:
    empty = np.zeros(0)
    direction = DirectionResult("a", "b", {"R@1": 0.5}, empty, empty, empty, empty, empty)
    return EvalResult(n=4, directions={"a->b": direction}, embeddings={}, gaps=gaps,
                      errors=[("r", "a", "bad")] * errors, by_group=by_group or [])


def test_the_json_names_one_gap_all_gaps_only_when_several_and_what_was_skipped() -> None:
    none = _result({}).to_json()
    assert math.isnan(none["modality_gap"]) and "modality_gaps" not in none
    assert none == {"n": 4, "directions": {"a->b": {"R@1": 0.5}}, "modality_gap": none["modality_gap"], "skipped": 0}
    one = _result({"a|b": 0.25}).to_json()
    assert one["modality_gap"] == 0.25 and "modality_gaps" not in one
    two = _result({"a|b": 0.25, "a|c": 0.5}, by_group=["b|c"], errors=2).to_json()
    assert two["modality_gap"] == 0.25 and two["modality_gaps"] == {"a|b": 0.25, "a|c": 0.5}
    assert two["matched_by_group"] == ["b|c"] and two["skipped"] == 2
    assert "matched_by_group" not in one


def test_evaluate_passes_its_cache_and_options_on(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def detailed(model: object, dataset: object, cache: object = None, **kwargs: Any) -> EvalResult:
        seen.update(model=model, dataset=dataset, cache=cache, kwargs=kwargs)
        return _result({"a|b": 0.1})

    monkeypatch.setattr(evaluate_module, "evaluate_detailed", detailed)
    out = evaluate_module.evaluate("model", "data", "cache", ks=(1, 5))  # type: ignore[arg-type]
    assert seen == {"model": "model", "dataset": "data", "cache": "cache", "kwargs": {"ks": (1, 5)}}
    assert out["modality_gap"] == 0.1


# ------------------------------------------------------------------ evaluate_detailed on a small vector model
def _views(n: int, seed: int) -> dict[str, np.ndarray]:
    """Three noisy linear views of one 3-d latent; the views' maps are fixed, ``seed`` draws the rows."""
    maps = np.random.default_rng(99)
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    return {m: (z @ maps.normal(size=(3, d)) + 0.3 * rng.normal(size=(n, d))).astype(np.float32)
            for m, d in (("vec_a", 5), ("vec_b", 4), ("vec_c", 6))}


@pytest.fixture(scope="module")
def vector_model() -> Any:
    x = _views(120, 0)
    rows = [{"id": f"r{i}", **{m: x[m][i].tolist() for m in x}} for i in range(120)]
    train = PairedDataset.from_rows(rows, root=Path.cwd(), on_error="fail")
    return fit(train, ["vec_a", "vec_b", "vec_c"], method="cca", dim=3, cache=None, val_fraction=0.0)


def _test_rows(n: int = 30, drop_b: int = 0) -> PairedDataset:
    x = _views(n, 1)
    rows = [{"id": f"t{i}", "group": f"g{i}", **{m: x[m][i].tolist() for m in x}} for i in range(n)]
    for row in rows[:drop_b]:
        del row["vec_b"]
    return PairedDataset.from_rows(rows, root=Path.cwd(), on_error="fail")


def test_detailed_scores_the_pairs_asked_for_with_their_ks_and_chance(vector_model: Any) -> None:
    data = _test_rows(drop_b=4)
    calls: list[tuple[str, int, int]] = []
    full = evaluate_module.evaluate_detailed(vector_model, data, progress=lambda s, i, n: calls.append((s, i, n)))
    assert set(full.directions) == {f"{q}->{t}" for q in ("vec_a", "vec_b", "vec_c") for t in ("vec_a", "vec_b",
                                                                                                 "vec_c") if q != t}
    assert full.n == 30 and set(full.gaps) == {"vec_a|vec_b", "vec_a|vec_c", "vec_b|vec_c"} and not full.by_group
    stages = {stage for stage, _, _ in calls}
    # each modality reports its progress, ending at its number of unique items (vec_b: 4 rows lack it)
    assert stages == {"encode vec_a", "encode vec_b", "encode vec_c"}
    for stage in stages:
        seen = [(i, n) for s, i, n in calls if s == stage]
        assert all(0 <= i <= n for i, n in seen) and seen[-1][0] == seen[-1][1] == (26 if "vec_b" in stage else 30)
    two = evaluate_module.evaluate_detailed(vector_model, data, modalities=["vec_a", "vec_b"], ks=(1, 2))
    assert set(two.directions) == {"vec_a->vec_b", "vec_b->vec_a"} and two.n == 26  # rows holding both
    d = two.directions["vec_a->vec_b"]
    assert set(d.metrics) >= {"R@1", "R@2", "chance"} and "R@5" not in d.metrics
    assert d.metrics["chance"]["R@1"] == pytest.approx(1 / 26) and d.relevant.dtype == bool
    assert d.metrics["R@1"] > 0.5 and d.cosine_metrics is None
    with pytest.raises(ValueError, match="need two modalities present in both model"):
        evaluate_module.evaluate_detailed(vector_model, data, modalities=["vec_a"])


def test_detailed_matches_by_group_when_no_row_holds_both(vector_model: Any) -> None:
    x = _views(20, 2)
    rows = [{"id": f"a{i}", "group": f"g{i}", "vec_a": x["vec_a"][i].tolist()} for i in range(20)]
    rows += [{"id": f"b{i}", "group": f"g{i}", "vec_b": x["vec_b"][i].tolist()} for i in range(20)]
    data = PairedDataset.from_rows(rows, root=Path.cwd(), on_error="fail")
    got = evaluate_module.evaluate_detailed(vector_model, data)
    assert got.by_group == ["vec_a|vec_b"] and got.n == 40 and set(got.directions) == {"vec_a->vec_b", "vec_b->vec_a"}
    assert got.directions["vec_a->vec_b"].relevant.sum() == 20  # each item's one partner, found by group


def test_detailed_keeps_the_cosine_scores_beside_a_hubness_rescoring(vector_model: Any) -> None:
    data = _test_rows()
    plain = evaluate_module.evaluate_detailed(vector_model, data, modalities=["vec_a", "vec_b"], ks=(1, 2))
    csls = evaluate_module.evaluate_detailed(vector_model, data, modalities=["vec_a", "vec_b"], ks=(1, 2),
                                             hubness=Hubness("csls", 3))
    for name, d in csls.directions.items():
        # the cosine ranking of the same queries, as the plain run scores it (without its chance block)
        assert d.cosine_metrics == {k: v for k, v in plain.directions[name].metrics.items() if k != "chance"}
        assert not np.allclose(d.similarity, plain.directions[name].similarity)
        assert "chance" in d.metrics


def test_a_pair_with_nothing_to_match_is_skipped_and_the_next_pairs_are_still_scored(vector_model: Any) -> None:
    """vec_b sits on rows and groups of its own, so neither a|b nor b|c can be matched; a|c, which comes after
    a|b, shares rows and is still scored."""
    x = _views(10, 3)
    rows = [{"id": f"a{i}", "group": f"ga{i}", "vec_a": x["vec_a"][i].tolist(), "vec_c": x["vec_c"][i].tolist()}
            for i in range(10)]
    rows += [{"id": f"b{i}", "group": f"gb{i}", "vec_b": x["vec_b"][i].tolist()} for i in range(10)]
    data = PairedDataset.from_rows(rows, root=Path.cwd(), on_error="fail")
    got = evaluate_module.evaluate_detailed(vector_model, data)
    assert set(got.directions) == {"vec_a->vec_c", "vec_c->vec_a"} and got.n == 10 and not got.by_group
