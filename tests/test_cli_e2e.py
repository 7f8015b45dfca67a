"""The CLI end to end on a manifest of real photographs (scikit-image's bundled samples)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers.cli import run_cli
from helpers.photos import SAMPLES, VIEWS, write_photo_manifest
from modalign.cli import app


@pytest.fixture(scope="module")
def photo_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_photo_manifest(tmp_path_factory.mktemp("photos"))


@pytest.mark.parametrize("method", ["infonce", "procrustes", None])
def test_fit_eval_on_real_photos(photo_manifest: Path, tmp_path: Path, method: str | None) -> None:
    """Each method, and the default fit (no --method), fitted and evaluated through the CLI."""
    cache = tmp_path.parent / "shared-cache"
    model_dir = tmp_path / "model"
    chosen = ["--method", method, "--epochs", "60", "--val-fraction", "0"] if method else []
    run_cli(["fit", "--data", str(photo_manifest), "--modalities", "image,text", *chosen,
          "--dim", "32", "--holdout", "0.25", "--cache", str(cache), "--out", str(model_dir)])
    assert {"config.json", "heads.safetensors", "metrics.json"} <= {p.name for p in model_dir.iterdir()}

    out_json = tmp_path / "eval.json"
    text = run_cli(["eval", "--model", str(model_dir), "--data", str(photo_manifest), "--json", str(out_json),
                 "--cache", str(cache)])
    assert "text->image" in text
    result = json.loads(out_json.read_text())
    assert result["split"] == "test"
    assert result["n"] == 5 * VIEWS  # 25% of 20 concepts held out, every view is a pair
    for direction in ("text->image", "image->text"):
        metrics = result["directions"][direction]
        assert set(metrics) >= {"R@1", "R@5", "R@10", "MRR", "median_rank"}
        assert 0.0 <= metrics["R@1"] <= metrics["R@5"] <= metrics["R@10"] <= 1.0
    assert 0.0 <= result["modality_gap"] <= 2.0

    # Five held-out photos are too few for a quality floor (tests/test_demo.py and tests/test_bench_alignment.py
    # hold those); on the 15 photos it was fitted on, every method must retrieve far above chance (1/15).
    train_json = tmp_path / "train.json"
    run_cli(["eval", "--model", str(model_dir), "--data", str(photo_manifest), "--split", "train",
          "--json", str(train_json), "--cache", str(cache)])
    train = json.loads(train_json.read_text())
    for direction, metrics in train["directions"].items():
        assert metrics["R@1"] >= 10 * metrics["chance"]["R@1"], (direction, metrics)


def test_bad_manifest_is_reported_not_a_traceback(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a", "image": "nope.png", "text": "x"}\n{"id": "a", "text": 3}\n')
    result = CliRunner().invoke(app, ["fit", "--data", str(manifest), "--modalities", "image,text",
                                      "--on-error", "fail", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "row 1, field 'image': file not found" in result.output
    assert "row 2, field 'text': text must be a string" in result.output
    assert "Traceback" not in result.output


def test_unknown_method_fails_cleanly(photo_manifest: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["fit", "--data", str(photo_manifest), "--modalities", "image,text",
                                      "--method", "nope", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "unknown method 'nope'" in result.output


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "modalign"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True, timeout=120)
    assert "fit" in out.stdout and "eval" in out.stdout and "datasets" in out.stdout


def test_save_load_gives_identical_embeddings(photo_manifest: Path, tmp_path: Path) -> None:
    from modalign import PairedDataset, fit, load
    from modalign.align import TrainerSettings
    from modalign.features import FeatureCache

    ds = PairedDataset.from_manifest(photo_manifest)
    cache = FeatureCache(tmp_path.parent / "shared-cache")
    model = fit(ds, ["image", "text"], dim=16, cache=cache, settings=TrainerSettings(epochs=5))
    model.save(tmp_path / "m")
    loaded = load(tmp_path / "m")
    texts = list(SAMPLES.values())[:5]
    images = ds.items("image")[:5]
    for modality, items in (("text", texts), ("image", images)):
        a, b = model.encode(modality, items, cache=cache), loaded.encode(modality, items, cache=cache)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert loaded.config() == model.config()
