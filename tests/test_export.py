"""``modalign export``: the index's ids and embeddings read back bit for bit with plain pyarrow, pandas
(in a process where modalign cannot be imported) and lancedb; bad input is one line and exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.cli import run_cli
from modalign.search import Index
from test_index import EmojiSearch, emoji_search
from test_relocatable import _index_copy


@pytest.fixture(scope="module")
def emoji(tmp_path_factory: pytest.TempPathFactory) -> EmojiSearch:
    return emoji_search(tmp_path_factory)


def _index_arrays(index_dir: Path) -> tuple[list[str], np.ndarray]:
    index = Index.open(index_dir)
    ids = [index.catalog.entry_ids[p] for p in range(len(index.catalog)) if index.catalog.alive(p)]
    return ids, np.stack([index.vector(i) for i in ids])


def _table_arrays(table: pa.Table) -> tuple[list[str], np.ndarray]:
    emb = table.column("embedding").combine_chunks()
    assert pa.types.is_fixed_size_list(emb.type) and emb.type.value_type == pa.float32()
    return table.column("id").to_pylist(), emb.values.to_numpy().reshape(len(table), emb.type.list_size)


def test_parquet_round_trip(emoji: EmojiSearch, tmp_path: Path) -> None:
    out = tmp_path / "items.parquet"
    msg = run_cli(["export", "--index", str(emoji.index_dir), "--to", "parquet", "--out", str(out)])
    ids, vectors = _index_arrays(emoji.index_dir)
    got_ids, got = _table_arrays(pq.read_table(out))
    assert got_ids == ids and got.dtype == np.float32 and np.array_equal(got, vectors)
    assert f"exported {len(ids)} items" in msg
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed, not left behind

    table = pq.read_table(out)
    row = emoji.rows[0]
    first = table.filter(pa.compute.equal(table.column("id"), f"{row['id']}:image")).to_pylist()[0]
    assert first["modality"] == "image" and first["kind"] == "image" and first["group"] == row["group"]
    assert first["text"] == row["text"] and row["id"] in first["rows"]
    assert first["source"] == str((emoji.manifest.parent / row["image"]).resolve())
    texts = table.filter(pa.compute.equal(table.column("kind"), "text")).to_pylist()
    assert texts and all(t["source"] is None and t["text"] for t in texts)

    # pandas in a process where `import modalign` fails: nothing in the file needs modalign to read it
    script = (
        "import sys; sys.modules['modalign'] = None\n"
        "import numpy as np, pandas as pd\n"
        f"df = pd.read_parquet({str(out)!r})\n"
        "v = np.stack(df['embedding'].to_numpy())\n"
        "print(len(df), v.shape[1], v.dtype, df['id'].iloc[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(ids)), str(vectors.shape[1]), "float32", ids[0]]


def test_lancedb_round_trip(emoji: EmojiSearch, tmp_path: Path) -> None:
    lancedb = pytest.importorskip("lancedb")
    out = tmp_path / "db"
    run_cli(["export", "--index", str(emoji.index_dir), "--to", "lancedb", "--out", str(out)])
    table = lancedb.connect(str(out)).open_table("items")
    ids, vectors = _index_arrays(emoji.index_dir)
    got_ids, got = _table_arrays(table.to_arrow())
    order = np.argsort(got_ids)  # a database may hand rows back in its own order
    want = np.argsort(ids)
    assert [got_ids[i] for i in order] == [ids[i] for i in want]
    assert np.array_equal(got[order], vectors[want])
    # searchable in lancedb itself: an item's own vector finds it first
    hit = table.search(vectors[3], vector_column_name="embedding").limit(1).to_list()[0]
    assert hit["id"] == ids[3]
    # a second export needs --overwrite, then replaces the folder in one swap
    msg = run_cli(["export", "--index", str(emoji.index_dir), "--to", "lancedb", "--out", str(out)], code=2)
    assert "--overwrite" in msg
    run_cli(["export", "--index", str(emoji.index_dir), "--to", "lancedb", "--out", str(out), "--table", "v2",
             "--overwrite"])
    assert lancedb.connect(str(out)).open_table("v2").count_rows() == len(ids)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]


def test_export_of_a_database_store(emoji: EmojiSearch, tmp_path: Path) -> None:
    """An index whose vectors live only in LanceDB exports the same ids and vectors as the local one."""
    pytest.importorskip("lancedb")
    index_dir, out = tmp_path / "index", tmp_path / "items.parquet"
    run_cli(["index", "--model", str(emoji.model_dir), "--data", str(emoji.manifest), "--out", str(index_dir),
             "--cache", str(emoji.cache_root), "--store", "lancedb"])
    run_cli(["export", "--index", str(index_dir), "--to", "parquet", "--out", str(out)])
    ids, vectors = _index_arrays(emoji.index_dir)
    got_ids, got = _table_arrays(pq.read_table(out))
    assert got_ids == ids and np.array_equal(got, vectors)


def test_export_of_a_moved_dataset(emoji: EmojiSearch, tmp_path: Path) -> None:
    row = _index_copy(emoji, tmp_path / "data", tmp_path / "index")
    shutil.move(tmp_path / "data", tmp_path / "moved")
    out = tmp_path / "items.parquet"
    run_cli(["export", "--index", str(tmp_path / "index"), "--to", "parquet", "--out", str(out),
             "--data-root", str(tmp_path / "moved")])
    by_id = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    source = by_id[f"{row['id']}:image"]["source"]
    assert source == str((tmp_path / "moved" / row["image"]).resolve()) and Path(source).is_file()


def test_bad_input_is_one_line(emoji: EmojiSearch, tmp_path: Path) -> None:
    out = str(tmp_path / "x.parquet")
    cases = [
        (["--index", str(emoji.index_dir), "--to", "csv", "--out", out], "--to must be one of parquet, lancedb"),
        (["--index", str(tmp_path / "none"), "--to", "parquet", "--out", out], "not a modalign index"),
        (["--index", str(emoji.model_dir), "--to", "parquet", "--out", out], "not a modalign index"),
        (["--index", str(emoji.index_dir), "--to", "parquet", "--out", str(tmp_path / "no" / "x.parquet")],
         "does not exist"),
    ]
    for args, expected in cases:
        msg = run_cli(["export", *args], code=2)
        assert expected in msg and len(msg.strip().splitlines()) == 1 and "Traceback" not in msg, msg
    # an index folder whose index.json is garbage: one line naming the file
    broken = tmp_path / "broken"
    shutil.copytree(emoji.index_dir, broken)
    (broken / "index.json").write_text("{not json")
    msg = run_cli(["export", "--index", str(broken), "--to", "parquet", "--out", out], code=2)
    assert "index.json" in msg and "invalid JSON" in msg and len(msg.strip().splitlines()) == 1, msg
    assert not Path(out).exists()
    json.loads((emoji.index_dir / "index.json").read_text())  # the source index is untouched
