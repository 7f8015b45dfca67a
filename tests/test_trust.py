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


@pytest.fixture(scope="module")
def icon_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data folder, index) of 12 real icon concepts, fitted with one closed form (quick)."""
    from helpers.recipes import ready_recipe

    base = tmp_path_factory.mktemp("served")
    manifest = ready_recipe("icons").prepare(base / "data", limit=12).manifest
    model, index = base / "model", base / "index"
    run_cli(["fit", "--data", str(manifest), "--modalities", "image,text", "--method", "procrustes", "--dim", "8",
             "--cache", str(base / "cache"), "--out", str(model)])
    run_cli(["index", "--model", str(model), "--data", str(manifest), "--out", str(index),
             "--cache", str(base / "cache")])
    return manifest.parent, index


def test_served_files_never_leave_the_data_folder(icon_index, tmp_path: Path) -> None:
    """After indexing, items are swapped for a link to a file outside, a FIFO, a link to /dev/zero and a
    folder link: each is refused (403, one JSON detail), never streamed; untouched items still serve."""
    from fastapi.testclient import TestClient

    from modalign.search import Index
    from modalign.server import create_app

    _, index = icon_index
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web")
    idx = Index.open(index)
    images = [e for e in idx.catalog.entry_ids if idx.item(e).kind == "image"]
    paths = {e: Path(idx.item(e).path) for e in images}
    by_folder: dict[str, list[str]] = {}
    for e in images:
        by_folder.setdefault(paths[e].parent.name, []).append(e)
    (_, in_first), (_, in_second), (_, untouched) = sorted(by_folder.items())[:3]
    swapped = dict(zip(("link-out", "fifo", "dev-zero"), in_first[:3], strict=True))
    originals = {}
    for how, entry in swapped.items():
        path = paths[entry]
        originals[entry] = path.read_bytes()
        path.unlink()
        if how == "link-out":
            path.symlink_to(secret)
        elif how == "fifo":
            os.mkfifo(path)
        else:
            path.symlink_to("/dev/zero")
    # a whole folder of the dataset becomes a link to a copy of it outside the data folder
    folder_entry = in_second[0]
    folder = paths[folder_entry].parent
    outside = tmp_path / "outside"
    shutil.copytree(folder, outside)
    moved = folder.with_name(folder.name + "-moved")
    folder.rename(moved)
    folder.symlink_to(outside, target_is_directory=True)
    try:
        with TestClient(create_app(index), raise_server_exceptions=False) as client:
            for entry in [*swapped.values(), folder_entry]:
                for url in (f"/items/{entry}", f"/items/{entry}/thumbnail"):
                    r = client.get(url)
                    assert r.status_code == 403, (url, r.status_code, r.text[:200])
                    assert "not served" in r.json()["detail"] and "not for the web" not in r.text
            ok = untouched[0]
            r = client.get(f"/items/{ok}")
            assert r.status_code == 200 and r.content == paths[ok].read_bytes()
            assert r.headers["content-type"] == "image/png"
            assert client.get(f"/items/{ok}/thumbnail").status_code == 200
    finally:
        folder.unlink()
        moved.rename(folder)
        for entry, raw in originals.items():
            paths[entry].unlink()
            paths[entry].write_bytes(raw)


def test_index_and_fit_never_delete_a_users_files(fitted, tmp_path: Path) -> None:
    manifest, model, _ = fitted
    project = tmp_path / "project"
    (project / "model").mkdir(parents=True)
    (project / "model" / "notes.txt").write_text("mine")
    said = _one_line(run_cli(["index", "--model", str(model), "--data", str(manifest), "--out", str(project),
                              "--cache", str(tmp_path / "c")], code=2))
    assert "not empty and not a modalign index" in said and (project / "model" / "notes.txt").read_text() == "mine"
    assert not (project / "index.json").exists()
    # fit: refused before any work, unless --overwrite, which writes the model beside the user's file
    said = _one_line(run_cli(["fit", "--data", str(manifest), "--modalities", "vec_a,vec_b", "--method",
                              "procrustes", "--cache", str(tmp_path / "c"), "--out", str(project / "model")], code=2))
    assert "holds files modalign did not write (notes.txt)" in said and "--overwrite" in said
    assert not (project / "model" / "config.json").exists()
    run_cli(["fit", "--data", str(manifest), "--modalities", "vec_a,vec_b", "--method", "procrustes", "--dim", "4",
             "--cache", str(tmp_path / "c"), "--out", str(project / "model"), "--overwrite"])
    assert (project / "model" / "notes.txt").read_text() == "mine" and (project / "model" / "config.json").exists()
    # a model folder of modalign's own is replaced whole; nothing but its files was there
    run_cli(["fit", "--data", str(manifest), "--modalities", "vec_a,vec_b", "--method", "cca", "--dim", "4",
             "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "m2")])
    run_cli(["fit", "--data", str(manifest), "--modalities", "vec_a,vec_b", "--method", "procrustes", "--dim", "4",
             "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "m2")])
    assert json.loads((tmp_path / "m2" / "config.json").read_text())["method"] == "procrustes"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_prepare_does_not_overwrite_a_manifest_another_recipe_wrote(tmp_path: Path) -> None:
    mine = tmp_path / "data"
    mine.mkdir()
    (mine / "manifest.jsonl").write_text('{"id": "1", "text": "mine"}\n')
    said = _one_line(run_cli(["datasets", "prepare", "icons", "--out", str(mine), "--limit", "2"], code=2))
    assert "did not write" in said and "--overwrite" in said
    assert (mine / "manifest.jsonl").read_text() == '{"id": "1", "text": "mine"}\n'
    run_cli(["datasets", "prepare", "icons", "--out", str(tmp_path / "icons"), "--limit", "2"])
    run_cli(["datasets", "prepare", "icons", "--out", str(tmp_path / "icons"), "--limit", "2"])  # its own: rerun


KILL_SAVE = """
import os, signal, sys
import modalign.align.model as model_module
import modalign.align.model_card as card_module
import modalign._io as io_module
from modalign.align.model import AlignedModel

old, new, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
count = [0]
real_write, real_exchange = model_module.atomic_write_bytes, io_module._exchange

def write(path, data):
    real_write(path, data)
    count[0] += 1
    if count[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

def exchange(a, b):
    done = real_exchange(a, b)
    if kill_at == 99:
        os.kill(os.getpid(), signal.SIGKILL)
    return done

model_module.atomic_write_bytes = card_module.atomic_write_bytes = write
io_module._exchange = exchange
AlignedModel.load(new).save(old)
"""


def test_a_model_save_killed_at_any_file_leaves_the_old_or_the_new_model(fitted, tmp_path: Path) -> None:
    """SIGKILL after each file of a save over an existing model, and right after the folder swap: the folder
    then loads as the old model or the new one, whole, never new weights under an old config."""
    import subprocess
    import sys

    from modalign.align.model import AlignedModel

    manifest, model, _ = fitted
    other = tmp_path / "other"
    run_cli(["fit", "--data", str(manifest), "--modalities", "vec_a,vec_b", "--method", "cca", "--dim", "3",
             "--cache", str(tmp_path / "c"), "--out", str(other)])
    old_cfg, new_cfg = (json.loads((f / "config.json").read_text()) for f in (model, other))
    outcomes = []
    for kill_at in (1, 2, 3, 4, 99):
        target = tmp_path / f"target-{kill_at}"
        shutil.copytree(model, target)
        proc = subprocess.run([sys.executable, "-c", KILL_SAVE, str(target), str(other), str(kill_at)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == -9, proc.stderr
        loaded = AlignedModel.load(target)
        cfg = json.loads((target / "config.json").read_text())
        assert cfg in (old_cfg, new_cfg)
        source = model if cfg == old_cfg else other
        expect = AlignedModel.load(source)
        for m in ("vec_a", "vec_b"):
            x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
            np.testing.assert_array_equal(loaded.embed_features(m, x), expect.embed_features(m, x))
        outcomes.append("new" if cfg == new_cfg else "old")
    assert outcomes == ["old", "old", "old", "old", "new"]
