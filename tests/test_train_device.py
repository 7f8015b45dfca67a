"""``TrainerSettings.device`` / ``fit --device``: the CPU path is unchanged, a missing GPU is a clean error,
"auto" falls back to the CPU. (The GPU itself is checked by ``benchmarks/gpu_train.py`` on a GPU machine.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from modalign.cli import app

N_ROWS = 96


def _names(n: int) -> list[str]:
    import emoji

    return sorted({d["en"].strip(":").replace("_", " ") for d in emoji.EMOJI_DATA.values()})[200 : 200 + n]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory):
    """Real CLDR emoji names ↔ "an icon of <name>", a group per name (minilm encodes both)."""
    path = tmp_path_factory.mktemp("device") / "m.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i}", "text": n, "text_en": f"an icon of {n}"}) + "\n"
                            for i, n in enumerate(_names(N_ROWS))))
    return path


@pytest.fixture(scope="module")
def features(manifest, session_cache):
    from modalign.align.fit import encode_column
    from modalign.data import PairedDataset
    from modalign.encoders import get_encoder

    ds = PairedDataset.from_manifest(manifest)
    enc = get_encoder("minilm")
    feats, present = {}, {}
    for m in ("text", "text_en"):
        feats[m], present[m], _ = encode_column(ds, m, enc, session_cache, [enc.default_layer], stream=False)
    return feats, present, list(ds.groups), enc.default_layer


def _no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    # this dev machine has no GPU anyway; pinning it keeps the test meaningful on a GPU machine too
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _fit(features, head: str, **settings):
    from modalign.align.fit import fit_arrays
    from modalign.align.trainer import TrainerSettings

    feats, present, groups, layer = features
    fitted = fit_arrays(feats, present, groups, ["text", "text_en"], default_layers={"text": layer, "text_en": layer},
                        head=head, dim=16, settings=TrainerSettings(epochs=3, batch_size=32, seed=1, **settings))
    return {f"{m}.{k}": v.clone() for m, h in fitted.heads.items() for k, v in h.state_dict().items()}


@pytest.mark.parametrize(("head", "chunks"), [("linear", 1), ("mlp", 2)])  # mlp + chunks: dropout RNG replay
def test_explicit_cpu_and_auto_without_cuda_equal_the_default_bit_for_bit(features, monkeypatch, head, chunks):
    _no_cuda(monkeypatch)
    default = _fit(features, head, grad_chunks=chunks)
    for device in ("cpu", "auto"):
        other = _fit(features, head, grad_chunks=chunks, device=device)
        assert other.keys() == default.keys()
        for key, value in default.items():
            assert other[key].device.type == "cpu"
            torch.testing.assert_close(other[key], value, rtol=0, atol=0, msg=f"{device}: {key}")


def test_train_ddp_one_worker_honours_the_device_setting(features, monkeypatch):
    from modalign.align.ddp import train_ddp
    from modalign.align.heads.linear import LinearHead
    from modalign.align.losses.combined import build_loss
    from modalign.align.trainer import TrainData, TrainerSettings

    _no_cuda(monkeypatch)
    feats, present, groups, layer = features
    codes = np.unique(np.asarray(groups), return_inverse=True)[1]
    data = TrainData(features={m: feats[m][layer] for m in feats}, present=present, groups=codes.astype(np.int64))

    def heads():
        torch.manual_seed(0)
        out = {m: LinearHead(x.shape[1], 16) for m, x in data.features.items()}
        for m, h in out.items():
            h.fit_input_stats(data.features[m])
        return out

    runs = {}
    for device in ("cpu", "auto"):
        h = heads()
        res = train_ddp(h, build_loss("infonce"), data, TrainerSettings(epochs=2, batch_size=32, device=device),
                        workers=1)
        assert res.history[-1] < res.history[0]
        runs[device] = (res.history, h)
    assert runs["cpu"][0] == runs["auto"][0]
    for m in data.features:
        torch.testing.assert_close(runs["auto"][1][m].linear.weight, runs["cpu"][1][m].linear.weight, rtol=0, atol=0)
    with pytest.raises(ValueError, match="CUDA is not available"):
        train_ddp(heads(), build_loss("infonce"), data, TrainerSettings(epochs=1, device="cuda"), workers=1)


@pytest.mark.parametrize("spec", ["gpu", "mps", "cpu:1", "cuda:x", ""])
def test_unknown_devices_are_rejected(spec):
    from modalign.align.trainer import resolve_device

    with pytest.raises(ValueError, match="expected cpu, cuda, cuda:N or auto"):
        resolve_device(spec)


def test_cuda_without_cuda_is_a_clear_error_and_leaves_the_heads_alone(features, monkeypatch):
    from modalign.align.heads.linear import LinearHead
    from modalign.align.losses.combined import build_loss
    from modalign.align.trainer import TrainData, TrainerSettings, resolve_device, train_heads

    _no_cuda(monkeypatch)
    assert resolve_device("CPU") == torch.device("cpu") and resolve_device("auto") == torch.device("cpu")
    feats, present, groups, layer = features
    data = TrainData(features={m: feats[m][layer] for m in feats}, present=present,
                     groups=np.arange(len(groups), dtype=np.int64))
    heads = {m: LinearHead(x.shape[1], 8) for m, x in data.features.items()}
    before = {m: h.linear.weight.clone() for m, h in heads.items()}
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=f"device '{spec}': CUDA is not available"):
            train_heads(heads, build_loss("infonce"), data, None, TrainerSettings(epochs=1, device=spec))
    for m, h in heads.items():
        assert torch.equal(h.linear.weight, before[m]) and h.linear.weight.device.type == "cpu"


def _fit_args(manifest, cache, out, device: str) -> list[str]:
    return ["fit", "--data", str(manifest), "--modalities", "text,text_en", "--dim", "16", "--epochs", "3",
            "--batch-size", "32", "--cache", str(cache), "--out", str(out), "--device", device]


def test_cli_device(manifest, session_cache, tmp_path, monkeypatch):
    _no_cuda(monkeypatch)
    runner = CliRunner()
    res = runner.invoke(app, _fit_args(manifest, session_cache.root, tmp_path / "gpu", "cuda"))
    assert res.exit_code == 2, res.output
    assert "--device: device 'cuda': CUDA is not available" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "gpu").exists()  # refused before encoding or writing anything

    res = runner.invoke(app, _fit_args(manifest, session_cache.root, tmp_path / "bad", "tpu"))
    assert res.exit_code == 2 and "expected cpu, cuda, cuda:N or auto" in res.output, res.output

    heads = {}
    for device in ("auto", "cpu"):
        res = runner.invoke(app, _fit_args(manifest, session_cache.root, tmp_path / device, device))
        assert res.exit_code == 0, res.output
        config = json.loads((tmp_path / device / "config.json").read_text())
        assert config["training"]["settings"]["device"] == device
        heads[device] = load_file(str(tmp_path / device / "heads.safetensors"))
    assert heads["auto"].keys() == heads["cpu"].keys()
    for key, value in heads["cpu"].items():
        assert torch.equal(heads["auto"][key], value), key
