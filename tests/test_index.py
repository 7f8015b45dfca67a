"""``modalign index`` and the Index library on real emoji: dedupe, incremental adds, deletes, ANN, crash safety.

The emoji dataset, model and index built here are shared with the routing/server/page/load tests
(``emoji_search`` below, built once per test session).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import run_cli

EMOJI_CONCEPTS = 16


@dataclass
class EmojiSearch:
    manifest: Path
    model_dir: Path
    index_dir: Path
    cache_root: Path
    rows: list[dict]


def emoji_search(tmp_path_factory: pytest.TempPathFactory) -> EmojiSearch:
    """Emoji (a few concepts × 4 styles) → fitted image/text model → exact index; built once per session."""
    base = tmp_path_factory.getbasetemp() / "emoji-search"
    manifest = base / "data" / "manifest.jsonl"
    model_dir, index_dir, cache_root = base / "model", base / "index", base / "cache"
    if not (index_dir / "index.json").is_file():
        from modalign.data.recipes import DATASETS

        DATASETS.create("emoji").prepare(base / "data", limit=EMOJI_CONCEPTS)
        # effnet-lite0: the fastest packaged image encoder (the tests are about search, not alignment quality)
        run_cli(["fit", "--data", str(manifest), "--modalities", "image,text", "--encoders", "image=effnet-lite0",
                 "--dim", "64", "--epochs", "80",
                 "--val-fraction", "0", "--cache", str(cache_root), "--out", str(model_dir)])
        run_cli(["index", "--model", str(model_dir), "--data", str(manifest), "--out", str(index_dir),
                 "--cache", str(cache_root)])
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return EmojiSearch(manifest, model_dir, index_dir, cache_root, rows)


@pytest.fixture(scope="module")
def emoji(tmp_path_factory: pytest.TempPathFactory) -> EmojiSearch:
    return emoji_search(tmp_path_factory)


def write_manifest(path: Path, rows: list[dict], source: Path) -> Path:
    """A manifest next to ``source``'s files (image paths stay relative to the same root)."""
    path = source.parent / path.name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_index_holds_every_unique_item_once(emoji: EmojiSearch) -> None:
    from modalign.search import Index

    index = Index.open(emoji.index_dir)
    n_images = len({r["image"] for r in emoji.rows})
    n_texts = len({r["text"] for r in emoji.rows})
    assert index.counts() == {"image": n_images, "text": n_texts}
    assert n_texts < len(emoji.rows)  # four styles share one caption: stored once
    assert set(index.catalog.rows) == {r["id"] for r in emoji.rows}
    shared = index.item(index.catalog.entry_ids[index.catalog.rows[emoji.rows[0]["id"]]["items"]["text"]])
    assert shared.text == emoji.rows[0]["text"] and len(shared.rows) == 4
    image_hit = index.item(f"{emoji.rows[0]['id']}:image")
    assert image_hit.text == emoji.rows[0]["text"]  # an image's caption comes from its row
    assert Path(image_hit.path).is_file() and image_hit.meta["meta_style"] == emoji.rows[0]["meta_style"]
    files = {p.name for p in emoji.index_dir.iterdir()}
    assert {"index.json", "model", "seg-000001.json", "seg-000001.safetensors"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pt", ".npy"))]
    # a text query finds its own concept's images among the top results
    hits = index.search(emoji.rows[0]["text"], k=10, target_modalities=["image"])
    assert len(hits) == 10 and {h.modality for h in hits} == {"image"}
    assert emoji.rows[0]["group"] in {h.meta["group"] for h in hits[:5]}


def test_incremental_add_appends_only_new_items(emoji: EmojiSearch, tmp_path: Path) -> None:
    from modalign import PairedDataset
    from modalign.features import FeatureCache
    from modalign.search import Index

    half = len(emoji.rows) // 2
    first = write_manifest(tmp_path / "first-half.jsonl", emoji.rows[:half], emoji.manifest)
    out = tmp_path / "index"
    run_cli(["index", "--model", str(emoji.model_dir), "--data", str(first), "--out", str(out),
             "--cache", str(emoji.cache_root)])
    seg1 = (out / "seg-000001.safetensors").read_bytes()
    before = Index.open(out)
    with Index.edit(out) as index:
        report = index.add_dataset(PairedDataset.from_manifest(emoji.manifest), FeatureCache(emoji.cache_root))
    assert report.rows_added == len(emoji.rows) - half and report.rows_unchanged == half
    new_images = len({r["image"] for r in emoji.rows[half:]})
    new_texts = len({r["text"] for r in emoji.rows[half:]} - {r["text"] for r in emoji.rows[:half]})
    assert report.entries_added == new_images + new_texts
    assert report.n_encoded == 0  # everything came from the feature cache
    assert (out / "seg-000001.safetensors").read_bytes() == seg1  # appended, not rewritten
    after = Index.open(out)
    assert len(after) == len(before) + report.entries_added == len(Index.open(emoji.index_dir))
    # the same manifest again changes nothing
    generation = json.loads((out / "index.json").read_text())["generation"]
    text = run_cli(["index", "--model", str(emoji.model_dir), "--data", str(emoji.manifest), "--out", str(out),
                    "--cache", str(emoji.cache_root)])
    assert "0 added" in text and json.loads((out / "index.json").read_text())["generation"] == generation


def test_delete_rows_and_items(emoji: EmojiSearch, tmp_path: Path) -> None:
    from modalign.search import Index

    out = tmp_path / "index"
    shutil.copytree(emoji.index_dir, out)
    row = emoji.rows[0]
    text_entry = f"{emoji.rows[4]['id']}:text"  # the shared caption of the second concept
    text = run_cli(["index", "--out", str(out), "--delete", f"{row['id']},{text_entry}"])
    assert "deleted 1 row(s) and 1 item(s)" in text
    index = Index.open(out)
    assert row["id"] not in index.catalog.rows
    with pytest.raises(KeyError):
        index.item(f"{row['id']}:image")
    assert len(index.item(f"{emoji.rows[1]['id']}:image").rows) == 1  # other styles stay
    with pytest.raises(KeyError):
        index.item(text_entry)
    assert all("text" not in index.catalog.rows[r["id"]]["items"] for r in emoji.rows[4:8])
    hits = index.search(emoji.rows[0]["text"], k=1000, routing="raw")
    assert {h.id for h in hits}.isdisjoint({f"{row['id']}:image", text_entry})
    assert len(hits) == len(index)
    out_text = run_cli(["index", "--out", str(out), "--delete", "no-such-id"], code=2)
    assert "none of the ids to delete is in the index" in out_text

    run_cli(["index", "--out", str(out), "--compact"])
    compacted = Index.open(out)
    assert len(compacted._vectors) == len(compacted) == len(index)
    assert [h.id for h in compacted.search(row["text"], k=20)] == [h.id for h in index.search(row["text"], k=20)]


@pytest.mark.parametrize("ann", ["hnsw", "ivf"])
def test_ann_index_agrees_with_exact(emoji: EmojiSearch, tmp_path: Path, ann: str) -> None:
    from modalign.search import Index

    out = tmp_path / ann
    run_cli(["index", "--model", str(emoji.model_dir), "--data", str(emoji.manifest), "--out", str(out),
             "--ann", ann, "--cache", str(emoji.cache_root)])
    assert any(p.name.endswith(".faiss") for p in out.iterdir())
    exact, approx = Index.open(emoji.index_dir), Index.open(out)
    assert approx.backend == ann
    queries = [r["text"] for r in emoji.rows[::4]]
    overlap = []
    for q in queries:
        a = [h.id for h in exact.search(q, k=10, routing="raw")]
        b = [h.id for h in approx.search(q, k=10, routing="raw")]
        overlap.append(len(set(a) & set(b)) / 10)
    assert np.mean(overlap) >= 0.9, overlap
    # deletes are honoured by the faiss backends too (HNSW filters, IVF removes)
    victim = approx.search(queries[0], k=1, target_modalities=["image"])[0].id
    run_cli(["index", "--out", str(out), "--delete", victim])
    reopened = Index.open(out)
    assert victim not in {h.id for h in reopened.search(queries[0], k=50, target_modalities=["image"])}
    msg = run_cli(["index", "--model", str(emoji.model_dir), "--data", str(emoji.manifest), "--out", str(out),
                   "--ann", "exact" if ann != "exact" else "hnsw"], code=2)
    assert f"uses the '{ann}' backend" in msg


def test_interrupted_write_leaves_the_index_as_it_was(emoji: EmojiSearch, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from modalign.errors import ConfigError
    from modalign.search import Index
    from modalign.search.store import IndexStore

    out = tmp_path / "index"
    shutil.copytree(emoji.index_dir, out)
    before = (out / "index.json").read_bytes()

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed before the commit")

    monkeypatch.setattr(IndexStore, "commit", crash)
    with pytest.raises(KeyboardInterrupt), Index.edit(out) as index:
        index.delete([emoji.rows[0]["id"]])
    monkeypatch.undo()
    assert (out / "index.json").read_bytes() == before
    assert (out / "seg-000002.json").exists()  # written, never listed
    (out / ".seg-000003.safetensors.tmp").write_bytes(b"half a file")
    reader = Index.open(out)  # readers ignore unlisted files
    assert emoji.rows[0]["id"] in reader.catalog.rows
    with Index.edit(out):  # the next writer cleans them up
        pass
    assert not (out / "seg-000002.json").exists() and not (out / ".seg-000003.safetensors.tmp").exists()

    seg = out / "seg-000001.safetensors"
    data = bytearray(seg.read_bytes())
    data[-5] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"seg-000001\.safetensors is corrupt"):
        Index.open(out)
    manifest = json.loads(before)
    manifest["segments"][0]["name"] = "../../etc/passwd"
    (out / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="invalid index file"):
        Index.open(out)


def test_cli_errors_are_clean(emoji: EmojiSearch, tmp_path: Path) -> None:
    msg = run_cli(["index", "--out", str(tmp_path / "x"), "--data", str(emoji.manifest)], code=2)
    assert "a new index needs --model" in msg
    msg = run_cli(["index", "--out", str(tmp_path / "x")], code=2)
    assert "nothing to do" in msg
    msg = run_cli(["index", "--model", str(emoji.model_dir), "--data", str(emoji.manifest),
                   "--out", str(tmp_path / "y"), "--ann", "annoy"], code=2)
    assert "--ann must be one of" in msg
    # an index refuses a model it was not built with
    from modalign import load

    other = load(emoji.model_dir)
    with __import__("torch").no_grad():
        next(iter(other.branches["text"].head.parameters())).add_(0.01)
    other.save(tmp_path / "other-model")
    msg = run_cli(["index", "--model", str(tmp_path / "other-model"), "--data", str(emoji.manifest),
                   "--out", str(emoji.index_dir)], code=2)
    assert "built with a different model" in msg
    assert "Traceback" not in msg
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
