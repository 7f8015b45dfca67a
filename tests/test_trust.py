"""Opening a model or an index someone else made never runs code that a file in it names, unless the user
allows it: ``--trust-code`` in the CLI, ``trust_code=True`` in Python, or ``[trust] encoders`` in the settings."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import run_cli
from modalign.search.store import MODEL_DIR


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(manifest, model, index) over two inline-vector modalities: no encoder to load, so it is quick."""
    base = tmp_path_factory.mktemp("trust")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    rows = [{"id": f"r{i}", "vec_a": x[i].tolist(), "vec_b": x[i, ::-1].tolist(), "group": f"g{i}"} for i in range(40)]
    manifest = base / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, index = base / "model", base / "index"
    run_cli(["fit", "--data", str(manifest), "--modalities", "vec_a,vec_b", "--method", "procrustes", "--dim", "4",
             "--cache", str(base / "cache"), "--out", str(model)])
    run_cli(["index", "--model", str(model), "--data", str(manifest), "--out", str(index),
             "--cache", str(base / "cache")])
    return manifest, model, index


def _plant(folder: Path, marker: Path) -> None:
    """What an attacker edits: modality vec_a's encoder becomes ``os.system`` with a command as its option."""
    cfg = json.loads((folder / "config.json").read_text())
    cfg["modalities"]["vec_a"]["encoder"].update(name="py:os:system", config={"command": f"touch {marker}"})
    (folder / "config.json").write_text(json.dumps(cfg))


def _one_line(output: str) -> str:
    assert "Traceback" not in output, output
    return " ".join(output.split())


def test_a_model_naming_code_is_refused_by_every_command(fitted, tmp_path: Path) -> None:
    manifest, model, _ = fitted
    bad, marker = tmp_path / "model", tmp_path / "ran"
    shutil.copytree(model, bad)
    _plant(bad, marker)
    for args in (["eval", "--model", str(bad), "--data", str(manifest)],
                 ["index", "--model", str(bad), "--data", str(manifest), "--out", str(tmp_path / "i")],
                 ["fit", "--base", str(bad), "--add", "vec_b", "--data", str(manifest), "--out", str(tmp_path / "f")]):
        said = _one_line(run_cli([*args, "--cache", str(tmp_path / "c")], code=2))
        assert "'py:os:system' imports and runs code" in said and "--trust-code" in said, said
        assert str(bad / "config.json") in said
        assert not marker.exists()
    from modalign import load
    from modalign.errors import UntrustedCodeError

    with pytest.raises(UntrustedCodeError, match="trust_code=True"):
        load(bad)
    assert not marker.exists()


def test_an_index_whose_model_names_code_is_refused_by_serve_and_export(fitted, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An index's model fingerprint is an unkeyed hash anyone can recompute: the check is on the spec itself."""
    import uvicorn

    from modalign.align.model import AlignedModel
    from modalign.search.store import model_fingerprint

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("a model naming code got as far as listening"))
    _, _, index = fitted
    bad, marker = tmp_path / "index", tmp_path / "ran"
    shutil.copytree(index, bad)
    _plant(bad / MODEL_DIR, marker)
    # make the fingerprint match again, as an attacker would
    manifest = json.loads((bad / "index.json").read_text())
    manifest["model_fingerprint"] = model_fingerprint(AlignedModel.load(bad / MODEL_DIR, trust_code=True))
    (bad / "index.json").write_text(json.dumps(manifest))
    for args in (["serve", "--index", str(bad), "--port", "0"],
                 ["export", "--index", str(bad), "--to", "parquet", "--out", str(tmp_path / "x.parquet")]):
        said = _one_line(run_cli(args, code=2))
        assert "imports and runs code" in said and "--trust-code" in said, said
    assert not marker.exists()


def test_trust_code_or_the_settings_allow_it(fitted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest, model, _ = fitted
    bad, marker = tmp_path / "model", tmp_path / "ran"
    shutil.copytree(model, bad)
    _plant(bad, marker)
    # opted in: the named code runs (os.system returns an int, so the encoder then fails, in one line)
    said = _one_line(run_cli(["eval", "--model", str(bad), "--data", str(manifest), "--trust-code",
                              "--cache", str(tmp_path / "c")], code=2))
    assert marker.exists() and "not a modalign.Encoder" in said, said
    marker.unlink()
    settings = tmp_path / "config.toml"
    settings.write_text('[trust]\nencoders = ["py:os:system"]\n')
    monkeypatch.setenv("MODALIGN_CONFIG", str(settings))
    from modalign import load

    assert load(bad).branch("vec_a").encoder == "py:os:system"  # allowed by the user's own list
    settings.write_text("[trust\n")
    with pytest.raises(Exception, match="cannot read the settings file"):
        load(bad)
    monkeypatch.setenv("MODALIGN_CONFIG", os.devnull)
    said = _one_line(run_cli(["eval", "--model", str(bad), "--data", str(manifest)], code=2))
    assert "imports and runs code" in said and not marker.exists()


def test_which_specs_run_code() -> None:
    from modalign.encoders.spec import code_specs

    assert code_specs("minilm") == [] and code_specs("effnet-lite0+dinov2-s") == []
    assert code_specs("hf:/some/folder") == [] and code_specs("st:/x") == [] and code_specs("onnx:/m.onnx") == []
    assert code_specs("py:pkg.mod:make") == ["py:pkg.mod:make"]
    assert code_specs("some-plugin") == ["some-plugin"]
    assert code_specs("minilm+py:a:b") == ["py:a:b"]
