"""The ``speech`` recipe on real espeak-ng output, then fit + eval on it through the CLI.

Needs the Debian packages espeak-ng and unicode-cldr-core (scripts/install_system_deps.sh).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from helpers.recipes import ready_recipe
from modalign.cli import app
from modalign.data import PairedDataset
from modalign.data.recipes import DATASETS
from modalign.data.recipes.emoji import EmojiRecipe
from modalign.data.recipes.speech import SpeechRecipe, check_clip

LIMIT = 10
VOICES = ("en-us", "en-gb+f3")
SPEEDS = (130, 175)


def read_manifest(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, list[tuple[str, int, int]]]:
    recipe = ready_recipe("speech", voices=VOICES, speeds=SPEEDS)
    out = tmp_path_factory.mktemp("speech")
    calls: list[tuple[str, int, int]] = []
    result = recipe.prepare(out, limit=LIMIT, progress=lambda stage, done, total: calls.append((stage, done, total)))
    return out, result, calls


def test_manifest_rows_files_and_card(prepared) -> None:
    out, result, calls = prepared
    rows = read_manifest(out / "manifest.jsonl")
    n_clips = LIMIT * len(VOICES) * len(SPEEDS)
    assert result.rows == len(rows) == n_clips and result.groups == LIMIT
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        assert row["id"] == f"{row['group']}__{row['meta_voice'].replace('+', '-')}__s{row['meta_speed']}"
        assert isinstance(row["text"], str) and row["text"].strip()
        assert check_clip(out / row["audio"]).status == "ok"
        assert 0.3 < row["meta_seconds"] < 8
    # slower speech is longer: the speed really reached espeak-ng
    by_key = {(r["group"], r["meta_voice"], r["meta_speed"]): r["meta_seconds"] for r in rows}
    slower = [by_key[(g, v, 130)] > by_key[(g, v, 175)] for g, v, s in by_key if s == 130]
    assert all(slower)
    # the two voices differ (different files, different pitch)
    g = rows[0]["group"]
    a, _ = sf.read(str(out / f"audio/{g}/en-us_s130.wav"))
    b, _ = sf.read(str(out / f"audio/{g}/en-gb-f3_s130.wav"))
    assert a.shape != b.shape or not np.allclose(a, b)
    assert {stage for stage, _, _ in calls} == {"synthesize", "validate"}
    assert ("synthesize", n_clips, n_clips) in calls
    card = (out / "CARD.md").read_text()
    assert "GPL-3.0-or-later" in card and "Unicode-DFS-2016" in card and f"{n_clips} clips" in card
    # the manifest loads as a dataset with audio + text
    ds = PairedDataset.from_manifest(out / "manifest.jsonl", on_error="fail")
    assert ds.kinds["audio"] == "audio" and ds.kinds["text"] == "text" and len(ds) == n_clips


def test_groups_and_names_match_the_emoji_dataset(prepared) -> None:
    from modalign.data.recipes.cldr import build_catalogue

    out, _, _ = prepared
    rows = read_manifest(out / "manifest.jsonl")
    concepts = build_catalogue().concepts[:LIMIT]
    assert isinstance(DATASETS.create("emoji"), EmojiRecipe)  # same catalogue the image set uses
    assert [c.slug for c in concepts] == list(dict.fromkeys(r["group"] for r in rows))
    assert {c.slug: c.name for c in concepts} == {r["group"]: r["text"] for r in rows}


def test_rerun_is_incremental_and_validation_drops_silence(prepared, tmp_path: Path) -> None:
    out, first, _ = prepared
    rows = read_manifest(out / "manifest.jsonl")
    again = SpeechRecipe(voices=VOICES, speeds=SPEEDS).prepare(out, limit=LIMIT)
    assert again.counts["synthesized_now"] == 0 and again.rows == first.rows
    # a clip deleted is made again; a clip gone silent is dropped and counted
    (out / rows[0]["audio"]).unlink()
    sf.write(str(out / rows[1]["audio"]), np.zeros(16000, np.float32), 16000)
    third = SpeechRecipe(voices=VOICES, speeds=SPEEDS).prepare(out, limit=LIMIT)
    assert third.counts["synthesized_now"] == 1
    assert third.counts["dropped_silent"] == 1 and third.rows == first.rows - 1
    assert rows[1]["id"] not in {r["id"] for r in read_manifest(out / "manifest.jsonl")}
    assert any("silent" in note for note in third.notes)
    # removing the silent clip brings the row back (the fit test below uses the full set)
    (out / rows[1]["audio"]).unlink()
    fourth = SpeechRecipe(voices=VOICES, speeds=SPEEDS).prepare(out, limit=LIMIT)
    assert fourth.counts["synthesized_now"] == 1 and fourth.rows == first.rows
    with pytest.raises(ValueError, match="no voice"):
        SpeechRecipe(voices=("xx-nope",)).prepare(tmp_path, limit=1)


def test_fit_and_eval_on_speech_through_the_cli(prepared, tmp_path: Path, session_cache) -> None:
    out, _, _ = prepared
    runner = CliRunner()
    manifest, model, report = out / "manifest.jsonl", tmp_path / "model", tmp_path / "eval.json"
    common = ["--cache", str(session_cache.root)]
    res = runner.invoke(app, ["fit", "--data", str(manifest), "--modalities", "audio,text", "--encoders",
                              "audio=whisper-tiny", "--dim", "32", "--holdout", "0.2", "--epochs", "80",
                              "--val-fraction", "0", "--out", str(model), *common])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["eval", "--model", str(model), "--data", str(manifest), "--split", "train",
                              "--json", str(report), *common])
    assert res.exit_code == 0, res.output
    metrics = json.loads(report.read_text())
    assert metrics["n"] == (LIMIT - 2) * len(VOICES) * len(SPEEDS)  # round(0.2 * 10) names held out
    for direction in ("audio->text", "text->audio"):
        assert set(metrics["directions"][direction]) >= {"R@1", "R@5", "MRR"}
    # 8 training names, 4 clips each: a fitted space must beat chance (1/8) by far
    assert metrics["directions"]["audio->text"]["R@1"] >= 0.6, metrics
