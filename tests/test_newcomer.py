"""The newcomer's first hour (#16): whole dataset names, CIs in the eval table, provenance in eval JSON and
report, a model card in every saved model folder, and progress bars that end at their total."""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from helpers.cli import run_cli
from modalign.cli import _ui as ui
from modalign.cli._ui import StageBars, metrics_table, stage_progress
from modalign.cli.datasets_cmd import datasets_table


@pytest.fixture(scope="module")
def vector_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """12 concepts × 3 rows of two noisy 6-d codes; a Procrustes fit with a quarter of the concepts held out."""
    base = tmp_path_factory.mktemp("newcomer")
    rng = np.random.default_rng(0)
    rows = []
    for g in range(12):
        code = rng.normal(size=6)
        for i in range(3):
            rows.append({"id": f"g{g}-{i}", "vec_a": (code + 0.05 * rng.normal(size=6)).tolist(),
                         "vec_b": (code[::-1] + 0.05 * rng.normal(size=6)).tolist(), "group": f"g{g}"})
    manifest = base / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_cli(["fit", "--data", str(manifest), "--modalities", "vec_a,vec_b", "--method", "procrustes", "--dim", "4",
             "--holdout", "0.25", "--out", str(base / "model")])
    return base / "model", manifest


def test_datasets_list_piped_keeps_whole_names() -> None:
    out = run_cli(["datasets", "list"])  # CliRunner's output is not a terminal: the plain form
    names = [line.split("\t")[0] for line in out.splitlines()[1:]]
    assert "emoji-multilingual" in names and not any("…" in n for n in names), out


def test_datasets_table_at_80_columns_keeps_whole_names() -> None:
    long = "a-dataset-with-a-long-name"
    buf = io.StringIO()
    Console(file=buf, width=80, force_terminal=False).print(datasets_table(
        [(long, "image, text, " * 8, "~14k images " * 5, "CC-BY " * 6, "apt: x; npm: y; " * 4, "yes")]))
    assert long in buf.getvalue() and "…" not in buf.getvalue(), buf.getvalue()


def test_metrics_table_shows_confidence_intervals() -> None:
    metrics = {"text->image": {"R@1": 0.5, "R@5": 0.75, "R@10": 0.9, "MRR": 0.6, "median_rank": 2,
                               "CI95": {"R@1": [0.4, 0.6], "median_rank": [1, 3]}}}
    buf = io.StringIO()
    Console(file=buf, width=120).print(metrics_table("t", {"m": metrics}))
    text = buf.getvalue()
    assert "0.500 [0.400, 0.600]" in text and "2 [1, 3]" in text and "95% CI" in text, text


def test_eval_json_and_report_carry_provenance(vector_model: tuple[Path, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir, manifest = vector_model
    out, report = tmp_path / "eval.json", tmp_path / "report.html"
    args = ["eval", "--model", str(model_dir), "--data", str(manifest), "--json", str(out), "--report", str(report),
            "--bootstrap", "200"]
    monkeypatch.setattr(sys, "argv", ["modalign", *args])
    text = run_cli(args)
    payload = json.loads(out.read_text())
    assert {"n", "directions", "modality_gap", "split"} <= set(payload)  # the old keys stay
    prov = payload["provenance"]
    assert prov["model"]["path"] == str(model_dir.resolve())
    assert prov["encoders"]["vec_a"]["encoder"] == "vectors" and prov["encoders"]["vec_b"]["layer"] == "input"
    assert prov["dataset"] == {"path": str(manifest.resolve()),
                               "sha256": hashlib.sha256(manifest.read_bytes()).hexdigest()}
    assert prov["modalign_version"] and prov["date_utc"].endswith("Z")
    assert prov["command"].startswith("modalign eval --model ")
    html = report.read_text()
    assert prov["dataset"]["sha256"] in html and "modalign eval --model" in html
    # the CLI table shows the bootstrap interval of each metric
    ci = payload["directions"]["vec_a->vec_b"]["CI95"]["R@1"]
    assert f"[{ci[0]:.3f}, {ci[1]:.3f}]" in text, text


def test_saved_model_has_a_model_card(vector_model: tuple[Path, Path]) -> None:
    model_dir, manifest = vector_model
    card = (model_dir / "README.md").read_text()
    for heading in ("## Data", "## Method", "## Metrics", "## Intended use", "## Limits"):
        assert heading in card
    assert str(manifest) in card and "procrustes" in card and "`vectors`" in card
    assert "val_R@1" in card


def test_model_card_shows_confidence_intervals(vector_model: tuple[Path, Path]) -> None:
    from modalign.align import load
    from modalign.align.model_card import render_model_card

    model = load(vector_model[0])
    model.metrics["heldout"] = {"directions": {"vec_a->vec_b": {"R@1": 0.8, "CI95": {"R@1": [0.7, 0.9]}}}}
    card = render_model_card(model)
    assert "| heldout | vec_a->vec_b | R@1 | 0.800 | [0.700, 0.900] |" in card, card


def test_every_bar_ends_at_its_total(monkeypatch: pytest.MonkeyPatch) -> None:
    """Library loops report every few items; the bars still end full when the step completes."""
    buf = io.StringIO()
    monkeypatch.setattr(ui, "err_console", Console(file=buf, width=100))
    with ui.progress_bars() as update:  # a fake step: reports stop short of the totals, as probe and index did
        update("encode text", 120, 480)
        update("hash image", 500, 600)
    final = buf.getvalue()
    assert "480/480" in final and "600/600" in final, final
    assert "120/480" not in final.splitlines()[-2] and "500/600" not in final.splitlines()[-1]


def test_a_failed_step_keeps_its_count() -> None:
    buf = io.StringIO()
    with stage_progress(Console(file=buf, width=100)) as bars:
        stages = StageBars(bars)
        stages.update("encode text", 120, 480)
        assert [(t.completed, t.total) for t in bars.tasks] == [(120, 480)]  # nothing finishes it early
        stages.update("train", 1, 10)  # the next stage starting means the last one is over
        assert [(t.completed, t.total) for t in bars.tasks] == [(480, 480), (1, 10)]
