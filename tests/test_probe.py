"""``modalign probe``: every layer pair scored by several measures; agrees with ``fit --layers auto``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modalign.encoders import DEFAULT_ENCODER_FOR_KIND, get_encoder
from modalign.evaluation.probe import DEFAULT_PROBE_METRICS, probe_layers, sample_rows
from modalign.metrics import get_metric
from test_report import chromium, run_cli, shared

Planted = tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]


@pytest.fixture(scope="module")
def planted() -> Planted:
    """Layer 'mid' of a and 'deep' of b carry the same latent; the other layers are noise or a weak copy."""
    rng = np.random.default_rng(1)
    n = 150
    z = rng.normal(size=(n, 5))
    features = {
        "a": {"shallow": rng.normal(size=(n, 24)),
              "mid": z @ rng.normal(size=(5, 24)) + 0.2 * rng.normal(size=(n, 24)),
              "last": z[:, :1] @ rng.normal(size=(1, 24)) + 2.0 * rng.normal(size=(n, 24))},
        "b": {"early": rng.normal(size=(n, 16)),
              "deep": np.tanh(z @ rng.normal(size=(5, 16))) + 0.2 * rng.normal(size=(n, 16))},
    }
    present = {"a": np.ones(n, bool), "b": np.ones(n, bool)}
    present["b"][:10] = False  # rows without b are not pairs
    return features, present


def test_planted_layer_pair_wins_every_measure(planted: Planted) -> None:
    features, present = planted
    result = probe_layers(features, present, ["a", "b"])
    assert result.recommendation == {"a": "mid", "b": "deep"}
    pair = result.pairs["a|b"]
    assert pair.n == 140
    for metric in DEFAULT_PROBE_METRICS:
        assert pair.tables[metric].shape == (3, 2)
        assert pair.best(metric)[:2] == ("mid", "deep"), metric
    out = result.to_json()
    assert out["pairs"]["a|b"]["best"]["cka"]["a"] == "mid"
    assert out["default_layers"] == {"a": "last", "b": "deep"}


def test_three_modalities_score_every_pair(planted: Planted) -> None:
    features, present = planted
    rng = np.random.default_rng(2)
    features = {**features, "c": {"only": features["a"]["mid"] @ rng.normal(size=(24, 12))}}
    present = {**present, "c": np.ones(len(present["a"]), bool)}
    result = probe_layers(features, present, ["a", "b", "c"], metrics=["cka"])
    assert set(result.pairs) == {"a|b", "a|c", "b|c"}
    assert result.recommendation == {"a": "mid", "b": "deep", "c": "only"}
    assert result.pairs["a|c"].best("cka")[0] == "mid"


def test_measures_use_the_rows_layer_selection_draws(planted: Planted) -> None:
    features, present = planted
    result = probe_layers(features, present, ["a", "b"], metrics=["cka"], seed=3, max_pairs=60)
    rows = sample_rows(present, ["a", "b"], seed=3, max_pairs=60)
    assert len(rows) == 60 and result.pairs["a|b"].n == 60
    expected = get_metric("cka")(features["a"]["shallow"][rows], features["b"]["early"][rows])
    assert result.pairs["a|b"].at("cka", "shallow", "early") == pytest.approx(expected)


def test_rejects_measures_of_one_space(planted: Planted) -> None:
    features, present = planted
    with pytest.raises(ValueError, match="alignment"):
        probe_layers(features, present, ["a", "b"], metrics=["alignment"])


def test_probe_cli_matches_fit_layers_auto(tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    manifest, cache = shared(tmp_path_factory)
    out = tmp_path_factory.mktemp("probe")
    text = run_cli(["probe", "--data", str(manifest), "--modalities", "image,text", "--holdout", "0.25",
                    "--cache", str(cache), "--json", str(out / "probe.json"),
                    "--report", str(out / "probe.html")])
    assert "fit --layers auto" in text and "mutual_knn" in text
    probe = json.loads((out / "probe.json").read_text())
    pair = probe["pairs"]["image|text"]
    assert pair["chance"]["mutual_knn"] == pytest.approx(probe["k"] / (pair["n"] - 1))
    assert pair["verdict"].split(":")[0] in " ".join(text.split())  # the CLI says it in words too
    assert pair["verdict"].split(":")[0] in (out / "probe.html").read_text()
    assert pair["n"] == 45  # the training part: 15 of 20 photos × 3 views
    for m in ("image", "text"):  # every layer of the default encoders, one pass each
        assert pair["layers"][m] == list(get_encoder(DEFAULT_ENCODER_FOR_KIND[m]).layers)
    assert set(pair["scores"]) == set(DEFAULT_PROBE_METRICS)

    run_cli(["fit", "--data", str(manifest), "--modalities", "image,text", "--layers", "auto", "--holdout", "0.25",
             "--method", "procrustes", "--dim", "16", "--cache", str(cache), "--out", str(out / "auto")])
    chosen = json.loads((out / "auto" / "config.json").read_text())["modalities"]
    fit_layers = json.loads((out / "auto" / "metrics.json").read_text())["layers"]
    assert fit_layers["n"] == pair["n"]
    assert probe["recommendation"] == {m: chosen[m]["layer"] for m in ("image", "text")}
    # the mutual-kNN table is the one fit scored, cell for cell
    for i, la in enumerate(pair["layers"]["image"]):
        for j, lt in enumerate(pair["layers"]["text"]):
            assert pair["scores"]["mutual_knn"][i][j] == pytest.approx(fit_layers["scores"]["image|text"][f"{la}|{lt}"],
                                                                       abs=1e-6)

    with sync_playwright() as p:
        browser = chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((out / "probe.html").as_uri())
        images = page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth > 0)")
        rows = page.eval_on_selector_all("#probe-summary tbody tr", "rs => rs.length")
        page.screenshot(path=str(artifacts_dir / "probe-report.png"), full_page=True)
        browser.close()
    assert len(images) == len(DEFAULT_PROBE_METRICS) and all(images)
    assert rows == len(DEFAULT_PROBE_METRICS)
    assert "Chance mutual-kNN" in (out / "probe.html").read_text()


def test_chance_level_and_verdict_separate_planted_from_shuffled(planted: Planted) -> None:
    """Chance is k/(n−1); shuffling the pairing brings the best mutual-kNN down to about chance."""
    features, present = planted
    result = probe_layers(features, present, ["a", "b"], metrics=["mutual_knn"])
    pair = result.pairs["a|b"]
    assert result.k is not None
    assert pair.chance(result.k) == pytest.approx(result.k / (pair.n - 1))
    assert pair.verdict(result.k).startswith("clearly alignable")
    perm = np.random.default_rng(0).permutation(len(present["b"]))
    shuffled = {"a": features["a"], "b": {name: x[perm] for name, x in features["b"].items()}}
    result_s = probe_layers(shuffled, {"a": present["a"], "b": present["b"][perm]}, ["a", "b"],
                            metrics=["mutual_knn"])
    pair_s = result_s.pairs["a|b"]
    best = pair_s.best("mutual_knn")[2]
    chance = pair_s.chance(result_s.k)
    assert chance is not None and best < 2.5 * chance  # the best of 6 layer pairs of noise
    assert pair_s.verdict(result_s.k).startswith(("not alignable", "alignable"))
    payload = result.to_json()["pairs"]["a|b"]
    assert payload["chance"]["mutual_knn"] == pytest.approx(chance, rel=0.2)
    assert payload["verdict"] == pair.verdict(result.k)


def test_the_verdict_names_the_held_out_r1_its_level_went_with(planted: Planted) -> None:
    """Calibrated on bench-align (benchmarks/probe_calibration.py): the verdict gives the held-out R@1 range,
    as a multiple of chance and, with the concepts known, as R@1 for a held-out fifth of them."""
    from modalign.evaluation.probe import HELDOUT_X_CHANCE

    features, present = planted
    pair = probe_layers(features, present, ["a", "b"], metrics=["mutual_knn"]).pairs["a|b"]
    result_k = probe_layers(features, present, ["a", "b"], metrics=["mutual_knn"]).k
    lo, mid, hi = HELDOUT_X_CHANCE["clear"]
    text = pair.verdict(result_k, groups=500)
    assert f"held-out R@1 {lo:g}-{hi:g}x chance (median {mid:g}x)" in text
    assert f"R@1 about {lo / 100:.2f}-{min(hi / 100, 1):.2f}, typically {mid / 100:.2f}" in text  # gallery 100
    assert "modest" not in text
