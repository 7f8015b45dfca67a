"""An encoder plugin package (tests/plugin_pkg, entry point in its own pyproject) pip-installed into the
test environment, then fit → eval → index → serve through the CLI; ``py:`` factories; discoverability."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers.cli import run_cli
from test_server import serve

PLUGIN_SRC = Path(__file__).resolve().parent / "plugin_pkg"
DIST = "modalign-trigram"


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True,
                   capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Install the example plugin (from a copy, so no build folders land in tests/); uninstalled afterwards."""
    src = tmp_path_factory.mktemp("plugin") / "plugin_pkg"
    shutil.copytree(PLUGIN_SRC, src)
    _pip("install", "--no-deps", "--no-build-isolation", "--force-reinstall", str(src))
    try:
        yield "trigram"
    finally:
        _pip("uninstall", "-y", DIST)


@pytest.fixture(scope="module")
def emoji_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modalign.data.recipes import DATASETS

    out = tmp_path_factory.mktemp("plugin-emoji")
    DATASETS.create("emoji").prepare(out, limit=16)
    return out / "manifest.jsonl"


def test_plugin_fit_eval_index_serve(plugin: str, emoji_data: Path, tmp_path: Path) -> None:
    model, index_dir, cache = tmp_path / "model", tmp_path / "index", tmp_path / "cache"
    listed = json.loads(run_cli(["encoders", "list", "--json"]))
    entry = next(e for e in listed if e["name"] == plugin)
    assert entry == {**entry, "kind": "text", "package": DIST, "installed": True, "source": "plugin"}

    run_cli(["fit", "--data", str(emoji_data), "--modalities", "image,text", "--encoders",
             f"image=effnet-lite0,text={plugin}", "--encoder-option", "text.buckets=128", "--dim", "32",
             "--epochs", "30", "--holdout", "0.25", "--cache", str(cache), "--out", str(model)])
    enc = json.loads((model / "config.json").read_text())["modalities"]["text"]["encoder"]
    assert enc["name"] == plugin and enc["config"] == {"buckets": 128} and len(enc["weights_sha256"]) == 64
    # the model names a plugin: opening it runs the plugin's code, which the user allows with --trust-code
    said = run_cli(["eval", "--model", str(model), "--data", str(emoji_data), "--cache", str(cache)], code=2)
    assert "imports and runs code" in " ".join(said.split())
    run_cli(["eval", "--model", str(model), "--data", str(emoji_data), "--cache", str(cache),
             "--json", str(tmp_path / "eval.json"), "--trust-code"])
    assert json.loads((tmp_path / "eval.json").read_text())["directions"]["text->image"]["R@1"] >= 0
    run_cli(["index", "--model", str(model), "--data", str(emoji_data), "--out", str(index_dir),
             "--cache", str(cache), "--trust-code"])
    row = json.loads(emoji_data.read_text().splitlines()[0])
    with serve(index_dir, "--trust-code") as url:
        r = httpx.post(url + "/search", json={"text": row["text"], "k": 3, "modalities": ["text"]}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["text"] == row["text"]
        r = httpx.post(url + "/search", json={"text": row["text"], "k": 3, "modalities": ["image"]}, timeout=60)
        assert r.status_code == 200 and len(r.json()["results"]) == 3

    # without the plugin the saved model cannot be recreated: one line naming it, exit 2 (serve too)
    _pip("uninstall", "-y", DIST)
    try:
        out = run_cli(["eval", "--model", str(model), "--data", str(emoji_data), "--trust-code"], code=2)
        assert f"encoder {plugin!r}" in out  # this process still has it loaded: its weight file is gone
        proc = subprocess.run([str(Path(sys.executable).parent / "modalign"), "serve", "--index", str(index_dir),
                               "--port", "0", "--trust-code"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"unknown encoder {plugin!r}: not a built-in and no installed plugin" in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    finally:
        src = tmp_path / "reinstall"
        shutil.copytree(PLUGIN_SRC, src)
        _pip("install", "--no-deps", "--no-build-isolation", str(src))


def test_py_factory_spec_and_options(emoji_data: Path, tmp_path: Path) -> None:
    """``py:MODULE:FACTORY`` (here the plugin's class, importable from tests/plugin_pkg/src)."""
    from modalign.encoders import EncoderLoadError, EncoderOptionError, get_encoder

    sys.path.insert(0, str(PLUGIN_SRC / "src"))
    try:
        enc = get_encoder("py:modalign_trigram.encoder:TrigramEncoder", buckets=64)
        assert enc.layer_dims["trigrams"] == 64 and enc.encode(["a"])["full"].shape == (1, enc.dim)
        with pytest.raises(EncoderOptionError, match="it takes: buckets, lowercase"):
            get_encoder("py:modalign_trigram.encoder:TrigramEncoder", bucket=64)
        with pytest.raises(EncoderLoadError, match="has no attribute 'Nope'"):
            get_encoder("py:modalign_trigram.encoder:Nope")
        with pytest.raises(EncoderLoadError, match=r"not a modalign\.Encoder"):
            get_encoder("py:json:dumps", obj=1)
    finally:
        sys.path.remove(str(PLUGIN_SRC / "src"))


def test_version_and_list_encoders() -> None:
    import modalign

    assert run_cli(["--version"]).strip() == f"modalign {modalign.__version__}"
    names = {e.name: e for e in modalign.list_encoders()}
    assert names["minilm"].kind == "text" and names["minilm"].dim == 384 and names["minilm"].installed
    assert {"hf:PATH", "st:PATH", "onnx:PATH", "py:MODULE:FACTORY"} <= set(names)
    assert issubclass(names["minilm"].__class__, object) and modalign.Encoder.__name__ == "Encoder"
