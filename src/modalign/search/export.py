"""Export an index's items and embeddings as a table other tools read without modalign.

One row per live item (a unique text, image, audio clip or vector; the manifest rows that share it
are listed in ``rows``)::

    id        string                   the item id (``<row id>:<modality>``), as /items/{id} takes it
    modality  string
    kind      string                   text | image | audio | vector
    group     string (null)            the group of the first manifest row holding the item
    text      string (null)            the text, or for images/audio the caption (a row's text)
    source    string (null)            the source file, resolved as the server resolves it (sources.py)
    rows      list<string>             ids of the manifest rows holding the item
    embedding fixed_size_list<float32, dim>   the stored unit vector, bit for bit

Targets: one Parquet file, or a LanceDB database folder with one table (default ``items``). Both are
written next to the destination and renamed into place, so a reader never sees half an export.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from modalign._io import atomic_write_with, fsync_dir, storage_error
from modalign.errors import ConfigError
from modalign.search.index import Index

FORMATS = ("parquet", "lancedb")
TABLE = "items"
_CHUNK = 8192  # items per record batch: the table is built without one Python list per column of all rows


def _schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("id", pa.string()), ("modality", pa.string()), ("kind", pa.string()), ("group", pa.string()),
        ("text", pa.string()), ("source", pa.string()), ("rows", pa.list_(pa.string())),
        ("embedding", pa.list_(pa.float32(), dim)),
    ], metadata={"modalign.dim": str(dim), "modalign.format": "modalign.export/1"})


def export_table(index: Index, progress: Callable[[str, int, int], None] | None = None) -> pa.Table:
    """The index's live items as an Arrow table (schema in the module docstring), in index order."""
    catalog = index.catalog
    schema = _schema(index.dim)
    live = [p for p in range(len(catalog)) if catalog.alive(p)]
    batches = []
    for start in range(0, len(live), _CHUNK):
        cols: dict[str, list[Any]] = {name: [] for name in schema.names if name != "embedding"}
        chunk = [catalog.entry_ids[pos] for pos in live[start:start + _CHUNK]]
        vectors = index.vectors(chunk)  # the store's own copy, whatever the store
        for entry_id in chunk:
            hit = index.item(entry_id)
            group = hit.meta.get("group")
            for name, value in (("id", hit.id), ("modality", hit.modality), ("kind", hit.kind),
                                ("group", None if group is None else str(group)), ("text", hit.text),
                                ("source", hit.path), ("rows", hit.rows)):
                cols[name].append(value)
        flat = pa.array(vectors.reshape(-1), pa.float32())
        arrays = [pa.array(cols[name], schema.field(name).type) for name in schema.names if name != "embedding"]
        arrays.append(pa.FixedSizeListArray.from_arrays(flat, index.dim))
        batches.append(pa.RecordBatch.from_arrays(arrays, schema=schema))
        if progress is not None:
            progress("export", start + len(vectors), len(live))
    return pa.Table.from_batches(batches, schema=schema)


def write_parquet(table: pa.Table, out: Path) -> None:
    atomic_write_with(out, lambda tmp: pq.write_table(table, tmp))


def _lancedb() -> Any:
    try:
        import lancedb
    except ImportError:
        raise ConfigError("--to lancedb needs the lancedb package: pip install 'modalign[stores]'") from None
    return lancedb


def write_lancedb(table: pa.Table, out: Path, name: str = TABLE) -> None:
    """A LanceDB database folder at ``out`` holding ``table`` as ``name``; built aside, then renamed in."""
    lancedb = _lancedb()
    try:
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    except OSError as exc:
        raise storage_error(out, "write", exc) from None
    old: Path | None = None
    try:
        lancedb.connect(str(tmp)).create_table(name, data=table)
        if out.exists():
            # a folder cannot be replaced in one rename: the old one steps aside for the moment of the swap
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            with contextlib.suppress(OSError):
                os.replace(old, out)
        if isinstance(exc, OSError):
            raise storage_error(out, "write", exc) from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(out.parent)


def export_index(index: Index, to: str, out: str | Path, table: str = TABLE,
                 progress: Callable[[str, int, int], None] | None = None) -> int:
    """Write ``index`` to ``out`` as ``to`` (parquet | lancedb); returns the number of items written."""
    if to not in FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(FORMATS)}, got {to!r}")
    out = Path(out)
    if not out.parent.is_dir():
        raise ConfigError(f"{out}: the folder {out.parent} does not exist")
    if to == "lancedb":
        _lancedb()  # before the slow part: a missing package is said at once
    data = export_table(index, progress)
    if to == "parquet":
        write_parquet(data, out)
    else:
        write_lancedb(data, out, table)
    return data.num_rows
