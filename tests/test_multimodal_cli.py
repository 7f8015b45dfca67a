"""Three modalities from the CLI: image, text and speech in one space with GRAM, Symile and pairwise InfoNCE.

The manifest mixes full rows (image + name + clip) with rows missing a modality (name + clip; image +
name with the clip in another row), as real n-modal data does; every method must train on what each
row has, and eval must report all three pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.cli import run_cli
from helpers.emoji_speech import EmojiSpeech, chance_recall, emoji_speech
from modalign.align import load
from modalign.data import PairedDataset
from modalign.evaluation.evaluate import evaluate_detailed
from modalign.features import FeatureCache

PAIRS = {"image->text", "text->image", "image->audio", "audio->image", "text->audio", "audio->text"}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data: EmojiSpeech = emoji_speech(tmp_path_factory)
    clips: dict[str, list[dict]] = {}
    for r in data.speech:
        clips.setdefault(r["group"], []).append(r)
    rows = []
    for i, img in enumerate(data.images):
        first, *rest = clips[img["group"]]
        if i % 4 == 3:  # image and clip of this concept never share a row
            rows.append({"id": img["id"], "image": img["image"], "text": img["text"], "group": img["group"]})
            rows.append({"id": first["id"], "audio": first["audio"], "text": first["text"], "group": img["group"]})
        else:
            rows.append({"id": img["id"], "image": img["image"], "text": img["text"], "audio": first["audio"],
                         "group": img["group"]})
        rows += [{"id": c["id"], "audio": c["audio"], "text": c["text"], "group": c["group"]} for c in rest]
    return data.write("three-modal.jsonl", rows)


@pytest.mark.parametrize("method", ["gram", "symile", "infonce"])
def test_three_modalities_fit_and_eval(manifest: Path, tmp_path: Path, method: str) -> None:
    cache = manifest.parent.parent / "emoji-speech-cache"
    model_dir = tmp_path / "model"
    out = run_cli(["fit", "--data", str(manifest), "--modalities", "image,text,audio",
                "--encoders", "audio=whisper-tiny", "--method", method, "--dim", "64", "--epochs", "60",
                "--batch-size", "64", "--val-fraction", "0", "--cache", str(cache), "--out", str(model_dir)])
    assert "saved" in out
    cfg = json.loads((model_dir / "config.json").read_text())
    assert list(cfg["modalities"]) == ["image", "text", "audio"] and cfg["method"] == method
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["fit"]["loss"]["name"] == method

    eval_json = tmp_path / "eval.json"
    run_cli(["eval", "--model", str(model_dir), "--data", str(manifest), "--cache", str(cache),
          "--json", str(eval_json)])
    payload = json.loads(eval_json.read_text())
    assert set(payload["directions"]) == PAIRS
    assert set(payload["modality_gaps"]) == {"image|text", "image|audio", "text|audio"}
    assert "matched_by_group" not in payload  # every pair shares rows here
    # on its training concepts every pair — image↔speech included — must be far from chance
    result = evaluate_detailed(load(model_dir), PairedDataset.from_manifest(manifest), FeatureCache(cache))
    for name, d in result.directions.items():
        assert payload["directions"][name]["R@1"] == pytest.approx(d.metrics["R@1"])
        assert d.metrics["R@5"] > 3 * chance_recall(d.relevant, 5), (method, name, d.metrics)


def test_gram_anchor_must_be_a_modality(manifest: Path, tmp_path: Path) -> None:
    out = run_cli(["fit", "--data", str(manifest), "--modalities", "image,text,audio", "--method", "gram",
                "--anchor", "video", "--encoders", "audio=whisper-tiny", "--epochs", "1",
                "--cache", str(manifest.parent.parent / "emoji-speech-cache"), "--out", str(tmp_path / "m")], code=2)
    assert "video" in out
