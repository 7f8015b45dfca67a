"""``modalign demo`` end to end on real emoji (a few concepts): it fits, evaluates, and a rerun reuses its models."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.cli import run_cli
from helpers.recipes import ready_recipe


def _r1(out: Path) -> dict[str, dict[str, float]]:
    results = json.loads((out / "results.json").read_text())
    return {label: {d: v["R@1"] for d, v in r["directions"].items()} for label, r in results.items()}


def _times_chance(out: Path) -> dict[str, dict[str, float]]:
    results = json.loads((out / "results.json").read_text())
    return {label: {d: v["R@1"] / v["chance"]["R@1"] for d, v in r["directions"].items()}
            for label, r in results.items()}


def test_demo_fits_then_a_rerun_reuses_matching_models(tmp_path: Path, session_cache) -> None:
    ready_recipe("emoji")  # the npm emoji sets are there (or the test fails naming the install step)
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--limit", "120", "--cache", str(session_cache.root)]
    first = run_cli(args)
    assert "reusing" not in first and "auto picked" in first
    assert set(_r1(out)) == {"auto (default)", "InfoNCE-linear", "Procrustes"}
    # quality floors on the 24 held-out concepts (chance R@1 1/24 both ways; measured: auto 8.5× / 10×,
    # InfoNCE 6.5× / 10×, Procrustes 5.5× / 8×): every method ≥ 3× chance, the default ≥ 5×
    ratios = _times_chance(out)
    assert all(x >= 3 for r in ratios.values() for x in r.values()), ratios
    assert min(ratios["auto (default)"].values()) >= 5, ratios

    again = run_cli(args)
    assert again.count("reusing") == 3
    scores = _r1(out)

    # a damaged model is fitted again, not trusted; the intact ones are still reused
    (out / "models" / "procrustes" / "heads.safetensors").write_bytes(b"not safetensors")
    third = run_cli(args)
    assert third.count("reusing") == 2 and "Procrustes: reusing" not in third
    assert _r1(out) == scores  # same data, method and seed: the refit scores the same

    refit = run_cli([*args, "--refit"])
    assert "reusing" not in refit
    assert _r1(out) == scores  # every model fitted again from scratch: the same numbers
