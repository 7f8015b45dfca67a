"""Relocatable indexes: source paths relative to the manifest's folder, ``--data-root`` when the dataset moved.

A prepared emoji dataset is copied, indexed through the CLI and moved; the HTTP API then serves the
item's bytes and thumbnail with ``--data-root`` (the app ``modalign serve`` builds), and
without it answers a 404 naming the missing path. Indexes written with absolute paths still load.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpers.cli import run_cli
from modalign.search import Index
from modalign.server import create_app
from test_index import EmojiSearch, emoji_search


@pytest.fixture(scope="module")
def emoji(tmp_path_factory: pytest.TempPathFactory) -> EmojiSearch:
    return emoji_search(tmp_path_factory)


def _index_copy(emoji: EmojiSearch, data: Path, index_dir: Path) -> dict:
    """Copy the prepared dataset to ``data`` and index it there through the CLI; returns its first row."""
    shutil.copytree(emoji.manifest.parent, data)
    run_cli(["index", "--model", str(emoji.model_dir), "--data", str(data / "manifest.jsonl"),
             "--out", str(index_dir), "--cache", str(emoji.cache_root)])
    return json.loads((data / "manifest.jsonl").read_text().splitlines()[0])


def _segment_entries(index_dir: Path) -> list[dict]:
    manifest = json.loads((index_dir / "index.json").read_text())
    return [e for s in manifest["segments"]
            for e in json.loads((index_dir / f"{s['name']}.json").read_text())["entries"]]


def test_moved_dataset_is_served_with_data_root(emoji: EmojiSearch, tmp_path: Path) -> None:
    data, index_dir = tmp_path / "data", tmp_path / "index"
    row = _index_copy(emoji, data, index_dir)
    images = [e for e in _segment_entries(index_dir) if e["kind"] == "image"]
    assert images and all(e["path"].startswith("images/") and e["root"] == str(data.resolve()) for e in images)
    image_bytes = (data / row["image"]).read_bytes()
    item = f"/items/{row['id']}:image"

    moved = tmp_path / "elsewhere" / "emoji"
    moved.parent.mkdir()
    shutil.move(data, moved)
    with TestClient(create_app(index_dir, data_root=moved), raise_server_exceptions=False) as client:
        r = client.get(item)
        assert r.status_code == 200 and r.content == image_bytes
        thumb = client.get(item + "/thumbnail")
        assert thumb.status_code == 200 and thumb.headers["content-type"] in ("image/webp", "image/png")
    with TestClient(create_app(index_dir), raise_server_exceptions=False) as client:
        for url in (item, item + "/thumbnail"):
            r = client.get(url)
            assert r.status_code == 404
            detail = r.json()["detail"]
            assert row["image"] in detail and "--data-root" in detail, detail
            assert str(tmp_path) not in detail  # the server's own folders stay out of the response
    # the Python API takes the same override
    hit = Index.open(index_dir, data_root=moved).item(f"{row['id']}:image")
    assert hit.path == str(moved.resolve() / row["image"]) and hit.source == row["image"]


def test_serve_cli_data_root(emoji: EmojiSearch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``modalign serve --data-root`` as typed, up to the socket: the app it would listen with serves the item."""
    import uvicorn

    data, index_dir = tmp_path / "data", tmp_path / "index"
    row = _index_copy(emoji, data, index_dir)
    image_bytes = (data / row["image"]).read_bytes()
    moved = tmp_path / "moved"
    shutil.move(data, moved)
    msg = run_cli(["serve", "--index", str(index_dir), "--data-root", str(tmp_path / "nowhere")], code=2)
    assert "--data-root" in msg and "not a folder" in msg and "Traceback" not in msg
    served: list = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append(app))
    for extra, status in ((["--data-root", str(moved)], 200), ([], 404)):
        run_cli(["serve", "--index", str(index_dir), "--port", "0", *extra])
        with TestClient(served.pop(), raise_server_exceptions=False) as client:
            r = client.get(f"/items/{row['id']}:image")
            assert r.status_code == status, r.text
            assert r.content == image_bytes if status == 200 else row["image"] in r.json()["detail"]


def test_dataset_moved_with_its_index_needs_no_data_root(emoji: EmojiSearch, tmp_path: Path) -> None:
    project = tmp_path / "project"
    row = _index_copy(emoji, project / "data", project / "index")
    image_bytes = (project / "data" / row["image"]).read_bytes()
    # a delete and a compaction rewrite every entry: their roots must survive it
    other = json.loads((project / "data" / "manifest.jsonl").read_text().splitlines()[-1])
    run_cli(["index", "--out", str(project / "index"), "--delete", other["id"], "--compact"])
    shutil.move(project, tmp_path / "renamed")
    index = Index.open(tmp_path / "renamed" / "index")
    hit = index.item(f"{row['id']}:image")
    assert hit.path is not None and Path(hit.path).read_bytes() == image_bytes
    assert hit.path == str((tmp_path / "renamed" / "data" / row["image"]).resolve())


def test_index_with_absolute_paths_still_serves(emoji: EmojiSearch, tmp_path: Path) -> None:
    """An index written before relative paths (absolute ``path``, no root fields) loads and serves as it did."""
    data, index_dir = tmp_path / "data", tmp_path / "index"
    row = _index_copy(emoji, data, index_dir)
    manifest = json.loads((index_dir / "index.json").read_text())
    for record in manifest["segments"]:
        log_path = index_dir / f"{record['name']}.json"
        log = json.loads(log_path.read_text())
        for entry in log["entries"]:
            root = entry.pop("root", None)
            entry.pop("root_from_index", None)
            if root is not None:
                entry["path"] = str(Path(root) / entry["path"])
        log_path.write_text(json.dumps(log))
        record["sha256"][log_path.name] = hashlib.sha256(log_path.read_bytes()).hexdigest()
    (index_dir / "index.json").write_text(json.dumps(manifest))
    assert all(Path(e["path"]).is_absolute() for e in _segment_entries(index_dir) if e["kind"] == "image")

    with TestClient(create_app(index_dir), raise_server_exceptions=False) as client:
        r = client.get(f"/items/{row['id']}:image")
        assert r.status_code == 200 and r.content == (data / row["image"]).read_bytes()
    shutil.move(data, tmp_path / "gone")
    with TestClient(create_app(index_dir), raise_server_exceptions=False) as client:
        r = client.get(f"/items/{row['id']}:image")
        assert r.status_code == 404 and Path(row["image"]).name in r.json()["detail"]


def test_resolution_rule(tmp_path: Path) -> None:
    """The order of sources.py on plain folders: --data-root, the recorded root, the root seen from the index."""
    from modalign.search.sources import SourceResolver, entry_source

    data, index_dir = tmp_path / "p" / "data", tmp_path / "p" / "index"
    (data / "img").mkdir(parents=True)
    index_dir.mkdir()
    (data / "img" / "a.png").write_bytes(b"x")
    fields = entry_source(data / "img" / "a.png", data, index_dir)
    assert fields == {"path": "img/a.png", "root": str(data), "root_from_index": "../data"}
    outside = tmp_path / "elsewhere.png"
    assert entry_source(outside, data, index_dir) == {"path": str(outside)}  # --allow-outside-root: absolute

    args = (fields["path"], fields["root"], fields["root_from_index"])
    assert SourceResolver(index_dir).resolve(*args) == str(data / "img" / "a.png")
    shutil.move(tmp_path / "p", tmp_path / "q")
    moved_index = tmp_path / "q" / "index"
    assert SourceResolver(moved_index).resolve(*args) == str(tmp_path / "q" / "data" / "img" / "a.png")
    assert SourceResolver(moved_index, data_root=tmp_path).resolve(*args) == str(tmp_path / "img" / "a.png")
    # neither folder exists: the recorded one is named (and the file is missing)
    assert SourceResolver(tmp_path / "gone").resolve(*args) == str(data / "img" / "a.png")
    assert SourceResolver(moved_index).resolve(str(outside)) == str(outside)  # absolute paths stay as they are
    assert SourceResolver(moved_index).resolve(None) is None
    # a tampered log cannot walk out of the data folder
    assert SourceResolver(moved_index, data_root=tmp_path).resolve("../../etc/passwd", str(data)) is None
