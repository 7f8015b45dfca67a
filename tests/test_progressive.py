"""Progressive addition on real data: an image–text space grows a speech branch from speech–text pairs.

Emoji images + names fit the space; espeak-ng speech of the names is added against text only; then
image↔speech retrieval (no row ever pairs an image with a clip) must beat chance clearly, while the
space's own heads stay bit-for-bit what they were.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.cli import run_cli
from helpers.emoji_speech import EmojiSpeech, chance_recall, emoji_speech
from modalign.align import load
from modalign.align.progressive import add_modality
from modalign.align.trainer import TrainerSettings
from modalign.data import PairedDataset
from modalign.evaluation.evaluate import evaluate_detailed
from modalign.features import FeatureCache


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> EmojiSpeech:
    return emoji_speech(tmp_path_factory)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "emoji-speech-cache"


@pytest.fixture(scope="module")
def manifests(data: EmojiSpeech) -> dict[str, Path]:
    return {
        "image_text": data.write("image-text.jsonl", data.images),
        "speech_text": data.write("speech-text.jsonl", data.speech),
        # images and clips in separate rows: eval can only match them by group (concept)
        "image_speech": data.write("image-speech.jsonl",
                                   [{"id": r["id"], "image": r["image"], "group": r["group"]} for r in data.images]
                                   + [{"id": r["id"], "audio": r["audio"], "group": r["group"]}
                                      for r in data.speech]),
    }


@pytest.fixture(scope="module")
def grown(manifests: dict[str, Path], cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("progressive")
    run_cli(["fit", "--data", str(manifests["image_text"]), "--modalities", "image,text", "--dim", "64",
          "--epochs", "80", "--val-fraction", "0", "--cache", str(cache_dir), "--out", str(out / "base")])
    run_cli(["fit", "--base", str(out / "base"), "--add", "audio", "--data", str(manifests["speech_text"]),
          "--encoders", "audio=whisper-tiny", "--epochs", "80", "--val-fraction", "0",
          "--cache", str(cache_dir), "--out", str(out / "grown")])
    return {"base": out / "base", "grown": out / "grown"}


def test_base_heads_are_unchanged_bit_for_bit(grown: dict[str, Path]) -> None:
    before, after = load_file(str(grown["base"] / "heads.safetensors")), load_file(str(grown["grown"] /
                                                                                        "heads.safetensors"))
    assert set(after) - set(before) and all(k.startswith("audio.") for k in set(after) - set(before))
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    base_cfg = json.loads((grown["base"] / "config.json").read_text())
    cfg = json.loads((grown["grown"] / "config.json").read_text())
    for m in ("image", "text"):  # encoders and layers of the space: unchanged too
        assert cfg["modalities"][m] == base_cfg["modalities"][m]
    assert cfg["modalities"]["audio"]["encoder"]["name"] == "whisper-tiny"
    stage = cfg["training"]["progressive"][-1]
    assert stage["added"] == "audio" and stage["partners"] == ["text"] and stage["method"] == "infonce"
    assert stage["base"] == str(grown["base"].resolve()) and stage["manifest"].endswith("speech-text.jsonl")
    metrics = json.loads((grown["grown"] / "metrics.json").read_text())
    assert metrics["progressive"]["audio"]["layers"]["chosen"] == cfg["modalities"]["audio"]["layer"]
    assert metrics["fit"] == json.loads((grown["base"] / "metrics.json").read_text())["fit"]


def test_image_speech_retrieval_never_paired_beats_chance(grown: dict[str, Path], manifests: dict[str, Path],
                                                          cache_dir: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "eval.json"
    run_cli(["eval", "--model", str(grown["grown"]), "--data", str(manifests["image_speech"]),
          "--cache", str(cache_dir), "--json", str(out_json)])
    payload = json.loads(out_json.read_text())
    assert set(payload["directions"]) == {"image->audio", "audio->image"}
    assert payload["matched_by_group"] == ["image|audio"]
    result = evaluate_detailed(load(grown["grown"]), PairedDataset.from_manifest(manifests["image_speech"]),
                               FeatureCache(cache_dir))
    for name, d in result.directions.items():
        metrics = payload["directions"][name]
        assert {k: metrics[k] for k in ("R@1", "R@5", "R@10", "MRR")} == pytest.approx(
            {k: d.metrics[k] for k in ("R@1", "R@5", "R@10", "MRR")})
        for k in (1, 5):
            chance = chance_recall(d.relevant, k)
            assert metrics[f"R@{k}"] > 3 * chance, (name, k, metrics, chance)


@pytest.mark.parametrize("method", ["siglip", "cwcl", "procrustes", "ridge"])
def test_other_methods_keep_the_space_frozen(grown: dict[str, Path], manifests: dict[str, Path], cache_dir: Path,
                                             method: str) -> None:
    base = load(grown["base"])
    ds = PairedDataset.from_manifest(manifests["speech_text"])
    model = add_modality(base, ds, "audio", encoder="whisper-tiny", method=method, cache=FeatureCache(cache_dir),
                         val_fraction=0.25, settings=TrainerSettings(epochs=30, patience=30))
    for m in ("image", "text"):
        for key, value in base.branch(m).head.state_dict().items():
            assert torch.equal(value, model.branch(m).head.state_dict()[key]), (m, key)
    assert model.training["progressive"][-1]["method"] == method
    # the new branch lands in the space: speech finds its own name among the texts far above chance
    result = evaluate_detailed(model, ds, FeatureCache(cache_dir))
    d = result.directions["text->audio"] if "text->audio" in result.directions else result.directions["audio->text"]
    assert d.metrics["R@1"] > 5 * chance_recall(d.relevant, 1), (method, d.metrics)


def test_bad_requests_fail_cleanly(grown: dict[str, Path], manifests: dict[str, Path], tmp_path: Path) -> None:
    out = run_cli(["fit", "--base", str(grown["base"]), "--add", "text", "--data", str(manifests["speech_text"]),
                "--out", str(tmp_path / "m")], code=2)
    assert "already in the model" in out
    out = run_cli(["fit", "--base", str(grown["base"]), "--data", str(manifests["speech_text"]),
                "--out", str(tmp_path / "m")], code=2)
    assert "--base and --add go together" in out
    out = run_cli(["fit", "--base", str(grown["base"]), "--add", "audio", "--method", "gram",
                "--data", str(manifests["speech_text"]), "--out", str(tmp_path / "m")], code=2)
    assert "supports infonce" in out
