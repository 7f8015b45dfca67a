"""``eval --compare``: paired bootstrap over queries; the bootstrap CIs of ``eval --json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modalign.evaluation.bootstrap import bootstrap_ci, paired_bootstrap
from modalign.evaluation.retrieval import metrics_from_ranks
from test_report import fit_model, run_cli, shared

KS = (1, 5, 10)


def test_bootstrap_ci_brackets_the_estimate_and_narrows_with_more_queries() -> None:
    rng = np.random.default_rng(0)
    small, large = rng.integers(1, 20, size=40), rng.integers(1, 20, size=4000)
    ci_small, ci_large = bootstrap_ci(small, KS, seed=1), bootstrap_ci(large, KS, seed=1)
    point = metrics_from_ranks(small, KS)
    for key in ("R@1", "R@5", "R@10", "MRR", "median_rank"):
        assert ci_small[key][0] <= point[key] <= ci_small[key][1]
    assert np.diff(ci_large["R@5"]) < np.diff(ci_small["R@5"]) / 4
    assert bootstrap_ci(np.ones(30, int), KS)["R@1"] == [1.0, 1.0]
    assert bootstrap_ci(np.array([0, 0]), KS) == {}  # queries without a relevant item are dropped


def test_paired_bootstrap() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(1, 30, size=200)
    same = paired_bootstrap(a, a.copy(), KS, n_boot=300)
    assert all(s["delta"] == 0 and s["p_value"] == 1.0 for s in same.values())
    better = np.maximum(1, a - 10)  # B ranks every query higher
    out = paired_bootstrap(a, better, KS, n_boot=300)
    assert out["R@1"]["delta"] > 0 and out["R@1"]["p_value"] < 0.01 and out["R@1"]["CI95_delta"][0] > 0
    assert out["median_rank"]["delta"] < 0
    swapped = paired_bootstrap(better, a, KS, n_boot=300)
    assert swapped["MRR"]["delta"] == pytest.approx(-out["MRR"]["delta"])
    assert out["R@5"]["a"] == pytest.approx(metrics_from_ranks(a, KS)["R@5"])
    with pytest.raises(ValueError, match="shape"):
        paired_bootstrap(a, a[:5], KS)


def test_eval_compare_cli(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    manifest, cache = shared(tmp_path_factory)
    base = tmp_path_factory.getbasetemp()
    model_a = fit_model(manifest, cache, base / "photo-infonce", "infonce")
    model_b = fit_model(manifest, cache, base / "photo-procrustes", "procrustes")
    common = ["--data", str(manifest), "--cache", str(cache), "--bootstrap", "200"]
    text = run_cli(["eval", "--model", str(model_a), "--compare", str(model_b), "--json", str(tmp_path / "ab.json"),
                    *common])
    run_cli(["eval", "--model", str(model_b), "--json", str(tmp_path / "b.json"), *common])
    ab, b = json.loads((tmp_path / "ab.json").read_text()), json.loads((tmp_path / "b.json").read_text())
    assert "paired bootstrap" in text
    block = ab["compare"]
    assert block["models"] == {"a": "photo-infonce", "b": "photo-procrustes"} and block["split_matches"]
    assert ab["split"] == b["split"] == "test"
    for direction, d in block["directions"].items():
        assert d["queries"] == ab["directions"][direction]["queries"]  # every query paired
        for metric, s in d["metrics"].items():
            assert s["a"] == pytest.approx(ab["directions"][direction][metric])  # same numbers as A's own eval
            assert s["b"] == pytest.approx(b["directions"][direction][metric])  # ... and as B's
            assert s["delta"] == pytest.approx(s["b"] - s["a"])
            assert 0 < s["p_value"] <= 1
            lo, hi = s["CI95_delta"]  # every key number whole in the table, though printed at 80 columns
            assert f"{s['p_value']:.4f}" in text and f"[{lo:+.3f}, {hi:+.3f}]" in text and f"{s['delta']:+.3f}" in text
    assert "…" not in text

    # a model fitted on another split may have seen the test concepts: warn and record it
    model_c = fit_model(manifest, cache, tmp_path / "other-split", "procrustes", "--seed", "5")
    text = run_cli(["eval", "--model", str(model_a), "--compare", str(model_c), "--json", str(tmp_path / "ac.json"),
                    *common])
    assert "another holdout split" in text
    assert json.loads((tmp_path / "ac.json").read_text())["compare"]["split_matches"] is False
