"""``modalign export``: an index's items and embeddings as Parquet or a LanceDB table."""

from __future__ import annotations

from pathlib import Path

import typer

from modalign.cli._ui import console, fail, progress_bars
from modalign.errors import ModalignError


def export_command(
    index_dir: Path = typer.Option(..., "--index", help="index directory from `modalign index`"),
    to: str = typer.Option(..., "--to", help="parquet (one file) | lancedb (a database folder)"),
    out: Path = typer.Option(..., "--out", help="the Parquet file or LanceDB folder to write"),
    table: str = typer.Option("items", "--table", help="with --to lancedb: the table's name"),
    data_root: Path | None = typer.Option(None, "--data-root", help="folder the dataset is in now, if it moved "
                                          "since it was indexed (for the 'source' column)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace OUT if it exists"),
    trust_code: bool = typer.Option(False, "--trust-code", help="let a model or index from someone else run "
                                    "the code its encoders name (py:MODULE:FACTORY, plugins); off: refused"),
) -> None:
    """Write one row per indexed item: id, modality, kind, group, text, source, rows and the embedding."""
    from modalign.search import Index
    from modalign.search.export import FORMATS, export_index

    if to not in FORMATS:
        raise fail(f"--to must be one of {', '.join(FORMATS)}, got {to!r}")
    if not (index_dir / "index.json").is_file():
        raise fail(f"--index {index_dir}: not a modalign index (run `modalign index` first)")
    if data_root is not None and not data_root.is_dir():
        raise fail(f"--data-root {data_root}: not a folder")
    if out.exists() and not overwrite:
        raise fail(f"--out {out}: already exists (give --overwrite to replace it)")
    if out.exists() and out.is_dir() != (to == "lancedb"):
        raise fail(f"--out {out}: is a {'folder' if out.is_dir() else 'file'}; --to {to} writes a "
                   f"{'folder' if to == 'lancedb' else 'file'}")
    try:
        index = Index.open(index_dir, data_root=data_root, trust_code=trust_code)
        with progress_bars() as update:
            n = export_index(index, to, out, table, progress=update)
    except (ModalignError, ValueError, KeyError) as exc:
        raise fail(str(exc).strip("'\"")) from None
    where = f"{out} (table {table!r})" if to == "lancedb" else str(out)
    console.print(f"[green]exported[/] {n} items ({index.dim}-d embeddings) to {where}", highlight=False)
