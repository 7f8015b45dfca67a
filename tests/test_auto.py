"""``--method auto`` (the default) end to end on real emoji, the step schedule and input conditioning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from helpers.cli import run_cli
from helpers.recipes import ready_recipe

CONCEPTS = 120


@pytest.fixture(scope="module")
def emoji_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("auto-emoji")
    recipe = ready_recipe("emoji", styles=["noto", "openmoji"], include_variants=False)
    return recipe.prepare(root, limit=CONCEPTS).manifest


def _fit(manifest: Path, cache: Path, out: Path, *extra: str) -> dict:
    run_cli(["fit", "--data", str(manifest), "--modalities", "image,text", "--holdout", "0.25", "--dim", "64",
             "--cache", str(cache), "--out", str(out), *extra])
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def auto_model(emoji_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("auto-model") / "model"
    return out, _fit(emoji_manifest, emoji_manifest.parent / "cache", out)


def test_default_fit_is_auto_with_a_cv_table(auto_model: tuple[Path, dict]) -> None:
    out, metrics = auto_model
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "auto"
    auto = metrics["fit"]["auto"]
    scored = [r for r in auto["table"] if "mean" in r]
    assert len(scored) >= 10 and auto["folds"] == 3
    best = max(scored, key=lambda r: (r["mean"], -r["std"]))  # the code's tie-break: the steadier one
    assert auto["picked"] == best["candidate"] and auto["cv_R@1"] == best["mean"]
    assert all(len(r["folds"]) == 3 and 0 <= r["mean"] <= 1 for r in scored)
    assert {r["method"] for r in auto["table"]} == {"procrustes", "cca"}  # the default set: closed forms only
    assert not any("skipped" in r for r in auto["table"]) and auto["time_dependent"] is False
    assert best["mean"] > 3 / CONCEPTS  # far above chance on the training concepts' folds


def test_auto_never_looks_at_held_out_rows(emoji_manifest: Path, auto_model: tuple[Path, dict],
                                           tmp_path: Path) -> None:
    """Poison every held-out row (their text becomes noise): the CV table, the pick and the heads stay the same."""
    from modalign.data.dataset import PairedDataset

    out, metrics = auto_model
    ds = PairedDataset.from_manifest(emoji_manifest)
    _, test = ds.split(0.25, seed=0)
    held = set(test.groups)
    rows = [json.loads(line) for line in emoji_manifest.read_text().splitlines()]
    rng = np.random.default_rng(0)
    poisoned = 0
    for r in rows:
        if r["group"] in held:
            r["text"] = " ".join(rng.choice(["zebra", "quantum", "tax", "violin", "glacier"], 4))
            poisoned += 1
    assert poisoned > 10
    manifest = emoji_manifest.parent / "poisoned.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    again = _fit(manifest, emoji_manifest.parent / "cache", tmp_path / "model")
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in metrics["fit"]["auto"]["table"]]
    strip2 = [{k: v for k, v in r.items() if k != "seconds"} for r in again["fit"]["auto"]["table"]]
    assert strip == strip2
    assert again["fit"]["auto"]["picked"] == metrics["fit"]["auto"]["picked"]
    a, b = load_file(str(out / "heads.safetensors")), load_file(str(tmp_path / "model" / "heads.safetensors"))
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6, err_msg=k)


def test_eval_names_rows_the_model_trained_on(emoji_manifest: Path, auto_model: tuple[Path, dict],
                                              tmp_path: Path) -> None:
    out, _ = auto_model
    cache = emoji_manifest.parent / "cache"
    test_json, all_json = tmp_path / "test.json", tmp_path / "all.json"
    text = run_cli(["eval", "--model", str(out), "--data", str(emoji_manifest), "--cache", str(cache),
                    "--json", str(test_json)])
    assert "TRAINED on" not in text
    assert json.loads(test_json.read_text())["training_rows_scored"] == 0
    text = run_cli(["eval", "--model", str(out), "--data", str(emoji_manifest), "--cache", str(cache),
                    "--split", "all", "--json", str(all_json)])
    payload = json.loads(all_json.read_text())
    config = json.loads((out / "config.json").read_text())
    assert payload["training_rows_scored"] == config["training"]["n_rows"] > 0
    assert "trained on" in text.replace("\n", " ")


def test_unknown_candidate_is_a_clear_error(emoji_manifest: Path, tmp_path: Path) -> None:
    text = run_cli(["fit", "--data", str(emoji_manifest), "--modalities", "image,text", "--candidates", "ccaa",
                    "--cache", str(emoji_manifest.parent / "cache"), "--out", str(tmp_path / "m")], code=2)
    assert "unknown candidate 'ccaa'" in text and "Traceback" not in text


def test_candidate_names_with_commas_are_one_candidate_each() -> None:
    """``--candidates "cca(reg=0.3,power=2.0)+l2,procrustes"``: commas inside a name's parentheses do not split it."""
    from modalign.align.auto import select_candidates

    picked = [c.name for c in select_candidates("cca(reg=0.3,power=2.0)+l2, procrustes(whiten=True),ridge(alpha=1.0)")]
    assert picked == ["cca(reg=0.3,power=2.0)+l2", "procrustes(whiten=True)", "ridge(alpha=1.0)"]
    with pytest.raises(ValueError, match=r"unknown candidate 'cca\(reg=9,power=2.0\)'"):
        select_candidates("cca(reg=9,power=2.0)")


def _paired(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 16))
    a = z @ rng.normal(size=(16, 48)) + 0.3 * rng.normal(size=(n, 48)) + 5.0  # a large common direction
    b = z @ rng.normal(size=(16, 24)) + 0.3 * rng.normal(size=(n, 24))
    return a.astype(np.float32), b.astype(np.float32)


def test_step_schedule_trains_a_tiny_and_a_large_set_alike() -> None:
    """Under the epoch schedule 60 rows get 100 updates (one batch per epoch); the step schedule gives
    every set enough updates, so the training loss per log(batch) ends comparable."""
    from modalign.align.fit import fit_arrays
    from modalign.align.trainer import TrainerSettings

    def final_loss(n: int, settings: TrainerSettings) -> tuple[float, dict]:
        a, b = _paired(n)
        fitted = fit_arrays({"a": {"x": a}, "b": {"x": b}}, {"a": np.ones(n, bool), "b": np.ones(n, bool)},
                            [str(i) for i in range(n)], ["a", "b"], default_layers={"a": "x", "b": "x"},
                            method="infonce", dim=16, val_fraction=0.0, settings=settings)
        info = fitted.info
        return info["history"][-1]["loss"] / np.log(info.get("schedule", {}).get("batch_size", min(256, n))), info

    tiny, tiny_info = final_loss(60, TrainerSettings(steps="auto"))
    large, large_info = final_loss(3000, TrainerSettings(steps="auto"))
    assert tiny_info["schedule"]["batch_size"] < large_info["schedule"]["batch_size"]
    assert tiny_info["schedule"]["steps"] >= 400
    assert tiny < 2 * large + 0.05 and large < 2 * tiny + 0.05, (tiny, large)
    epochs_tiny, _ = final_loss(60, TrainerSettings(epochs=20))
    assert epochs_tiny > 2 * tiny, (epochs_tiny, tiny)  # what the old default gave a tiny set


def test_step_schedule_keeps_its_final_weights_unless_asked_to_stop_early() -> None:
    """Default: the whole step budget, the final weights (validation MRR on a few dozen concepts stopped
    too early on held-out data, benchmarks/early_stopping.py). ``restore_best`` stops after ``patience``
    stale evaluations and says so in the schedule."""
    from modalign.align.fit import fit_arrays
    from modalign.align.trainer import TrainerSettings

    n = 400
    a, b = _paired(n)

    def run(settings: TrainerSettings) -> dict:
        return fit_arrays({"a": {"x": a}, "b": {"x": b}}, {"a": np.ones(n, bool), "b": np.ones(n, bool)},
                          [str(i) for i in range(n)], ["a", "b"], default_layers={"a": "x", "b": "x"},
                          method="infonce", dim=16, val_fraction=0.2, settings=settings).info

    full = run(TrainerSettings(steps=200, batch_size=32))
    assert full["best_step"] == 200 and full["history"][-1]["step"] == 200
    assert full["schedule"]["early_stop_signal"] == "none (final weights)"
    stopped = run(TrainerSettings(steps=200, batch_size=32, restore_best=True, patience=1))
    assert stopped["schedule"]["early_stop_signal"] == "val_MRR"
    assert stopped["history"][-1]["step"] < 200  # validation MRR saturates on this easy set: it stops
    assert stopped["best_step"] in [h["step"] for h in stopped["history"]]


def test_save_load_keeps_the_conditioning(tmp_path: Path) -> None:
    from modalign.align.fit import fit_arrays
    from modalign.align.model import AlignedModel, Branch

    a, b = _paired(200)
    fitted = fit_arrays({"a": {"x": a}, "b": {"x": b}}, {"a": np.ones(200, bool), "b": np.ones(200, bool)},
                        [str(i) for i in range(200)], ["a", "b"], default_layers={"a": "x", "b": "x"},
                        method="cca", dim=8, val_fraction=0.0, input_norm="l2")
    model = AlignedModel(branches={m: Branch(m, "vector", "vectors", {"dim": x.shape[1]}, "x", fitted.heads[m])
                                   for m, x in (("a", a), ("b", b))}, dim=8, method="cca")
    model.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["modalities"]["a"]["head"]["input_norm"] == "l2"
    loaded = AlignedModel.load(tmp_path / "m")
    for m, x in (("a", a), ("b", b)):
        np.testing.assert_array_equal(loaded.embed_features(m, x), model.embed_features(m, x))
    # l2 conditioning ignores each row's norm: a row scaled by 7 embeds the same
    np.testing.assert_allclose(loaded.embed_features("a", a[:5] * 7), loaded.embed_features("a", a[:5]), atol=1e-5)
    head = loaded.branch("a").head
    with torch.no_grad():
        centred = head.standardize(torch.as_tensor(a)).mean(0)
    assert float(centred.abs().max()) < 1e-4  # centred on the (normalised) training rows


def test_auto_is_not_worse_than_procrustes_on_held_out_emoji(emoji_manifest: Path, auto_model: tuple[Path, dict],
                                                            tmp_path: Path) -> None:
    """The default against the simplest closed form on the held-out concepts of real emoji: never more than
    0.02 below it in mean R@1 of both directions (measured here: auto 0.367, Procrustes 0.317)."""
    out, _ = auto_model
    cache = emoji_manifest.parent / "cache"
    procrustes = tmp_path / "procrustes"
    _fit(emoji_manifest, cache, procrustes, "--method", "procrustes")

    def mean_r1(model: Path) -> float:
        js = tmp_path / f"{model.name}.json"
        run_cli(["eval", "--model", str(model), "--data", str(emoji_manifest), "--cache", str(cache),
                 "--json", str(js)])
        return float(np.mean([d["R@1"] for d in json.loads(js.read_text())["directions"].values()]))

    auto_r1, procrustes_r1 = mean_r1(out), mean_r1(procrustes)
    assert auto_r1 >= procrustes_r1 - 0.02, (auto_r1, procrustes_r1)
