"""Per-part layers of combined encoders: ``--layers text=layer3+layer6`` over ``minilm+hf:DIR`` and several
layers of one encoder (``effnet-lite0`` with ``head+stage7``): each part is that encoder's feature at its
layer, L2-normalised, the widths add up, the choice is saved as an encoder option and recreated by eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import run_cli
from modalign.encoders import EncoderLoadError, get_encoder
from test_encoder_specs import TEXTS, _fit, _heldout_r1, emoji_data, minilm_dir  # noqa: F401  (fixtures)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_each_part_is_its_encoders_layer_normalised(minilm_dir: Path) -> None:  # noqa: F811
    spec = f"minilm+hf:{minilm_dir}"
    enc = get_encoder(spec, layers="layer3+emb")
    assert enc.layers == ("concat",) and enc.dim == 768 and enc.config() == {"layers": ["layer3", "emb"]}
    both = enc.encode(TEXTS)["concat"]
    assert both.shape == (len(TEXTS), 768)
    np.testing.assert_allclose(both[:, :384], _unit(get_encoder("minilm").encode(TEXTS, ["layer3"])["layer3"]),
                               atol=1e-5)
    np.testing.assert_allclose(both[:, 384:], _unit(get_encoder(f"hf:{minilm_dir}").encode(TEXTS, ["emb"])["emb"]),
                               atol=1e-5)
    # another layer choice is other features: its own cache id; the default keeps the old id
    assert enc.cache_id != get_encoder(spec).cache_id != get_encoder(spec, layers=["layer6", "layer6"]).cache_id
    assert "[" not in get_encoder(spec).cache_id
    with pytest.raises(EncoderLoadError, match="2 parts but 3 layers"):
        get_encoder(spec, layers="layer1+layer2+layer3")
    with pytest.raises(EncoderLoadError, match="has no layer 'stage7'"):
        get_encoder(spec, layers="layer1+stage7")
    with pytest.raises(EncoderLoadError, match="only the option 'layers'"):
        get_encoder(spec, pooling="cls")


def test_several_layers_of_one_image_encoder(emoji_data: Path) -> None:  # noqa: F811
    images = sorted((emoji_data.parent / "images").rglob("*.png"))[:3]
    enc = get_encoder("effnet-lite0+effnet-lite0", layers=["head", "stage7"])
    single = get_encoder("effnet-lite0")
    both = enc.encode(images)["concat"]
    assert both.shape == (3, single.layer_dims["head"] + single.layer_dims["stage7"]) == (3, 1600)
    ref = single.encode(images, ["head", "stage7"])
    np.testing.assert_allclose(both[:, :1280], _unit(ref["head"]), atol=1e-5)
    np.testing.assert_allclose(both[:, 1280:], _unit(ref["stage7"]), atol=1e-5)


def test_cli_layers_per_part_fit_and_eval(minilm_dir: Path, emoji_data: Path, tmp_path: Path) -> None:  # noqa: F811
    cache = tmp_path / "cache"
    spec = f"minilm+hf:{minilm_dir}"
    model = _fit(emoji_data, tmp_path / "m", cache, spec, "--layers", "text=layer4+layer6")
    cfg = json.loads((model / "config.json").read_text())["modalities"]["text"]
    assert cfg["encoder"]["name"] == f"minilm+hf:{minilm_dir.resolve()}" and cfg["layer"] == "concat"
    assert cfg["encoder"]["config"] == {"layers": ["layer4", "layer6"]}
    assert _heldout_r1(model, emoji_data, cache)["text->image"] >= 0  # eval recreates the same encoder
    # one encoder, several of its layers, from the CLI; the saved spec repeats it once per layer
    single = _fit(emoji_data, tmp_path / "m1", cache, "minilm", "--layers", "text=layer3+layer6")
    cfg = json.loads((single / "config.json").read_text())["modalities"]["text"]["encoder"]
    assert cfg["name"] == "minilm+minilm" and cfg["config"] == {"layers": ["layer3", "layer6"]}
    out = run_cli(["fit", "--data", str(emoji_data), "--modalities", "image,text", "--encoders", f"text={spec}",
                   "--layers", "text=layer4", "--out", str(tmp_path / "bad"), "--cache", str(cache)], code=2)
    assert "no layer 'layer4'" in out and "Traceback" not in out
