"""``modalign datasets list | prepare``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from modalign.cli._ui import console, emit_json, fail, progress_bars
from modalign.data.recipes.base import DatasetRecipe, PrepareResult

datasets_app = typer.Typer(help="Built-in paired datasets that install from apt/npm/pip.", no_args_is_help=True)


COLUMNS = ("name", "modalities", "size", "licence", "source", "ready")


@datasets_app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="print JSON (one object per dataset) instead of a table"),
) -> None:
    """Show every built-in dataset: modalities, size, licence, install source."""
    from modalign.data.recipes import DATASETS

    if as_json:
        emit_json([{"name": name, "modalities": list(r.modalities), "size": r.approx_size, "licence": r.licence,
                    "source": r.source, "missing": r.missing_requirements()}
                   for name in DATASETS.names() for r in [DATASETS.create(name)]])
        return
    rows = []
    for name in DATASETS.names():
        recipe = DATASETS.create(name)
        missing = recipe.missing_requirements()
        rows.append((name, ", ".join(recipe.modalities), recipe.approx_size, recipe.licence, recipe.source,
                     "yes" if not missing else "installs on prepare"))
    if console.is_terminal:
        console.print(datasets_table(rows))
    else:  # a pipe: tab-separated lines, whole names, easy to cut/grep
        for row in (COLUMNS, *rows):
            typer.echo("\t".join(row))  # rich would expand the tabs to spaces


def datasets_table(rows: list[tuple[str, ...]]) -> Table:
    """Names are never cut (they are what `prepare` takes); the other columns fold when the terminal is narrow."""
    table = Table(title="modalign datasets")
    width = max((len(r[0]) for r in rows), default=4)
    table.add_column("name", no_wrap=True, min_width=width)
    for col in COLUMNS[1:]:
        table.add_column(col, overflow="fold")
    for row in rows:
        ready = "[green]yes[/]" if row[-1] == "yes" else f"[yellow]{row[-1]}[/]"
        table.add_row(*row[:-1], ready)
    return table


def prepare_dataset(name: str, out: Path, limit: int | None, install: bool = True,
                    overwrite: bool = False) -> PrepareResult:
    from modalign.data.recipes import DATASETS

    try:
        recipe = DATASETS.create(name)
    except KeyError as exc:
        raise fail(str(exc).strip("'\"")) from None
    if not overwrite:
        check_prepare_target(recipe.name, out)
    return prepare_recipe(recipe, out, limit, install)


def check_prepare_target(name: str, out: Path) -> None:
    """A manifest already in ``out`` is re-prepared (incrementally) only when this recipe wrote it, as its
    CARD.md's title says; anything else exits 2 instead of being overwritten."""
    manifest = out / "manifest.jsonl"
    if not (manifest.exists() or manifest.is_symlink()):
        return
    card = out / "CARD.md"
    title = ""
    if card.is_file() and not card.is_symlink():
        with card.open("rb") as fh:
            title = fh.readline(200).decode("utf-8", "replace").strip()
    if title != f"# {name}":
        raise fail(f"--out {out}: already holds a manifest.jsonl that the {name} recipe did not write; give "
                   "another folder, or --overwrite to replace it")


def prepare_recipe(recipe: DatasetRecipe, out: Path, limit: int | None, install: bool = True) -> PrepareResult:
    from modalign.data.recipes.install import InstallError

    missing = recipe.missing_requirements()
    if missing:
        if not install:
            raise fail("missing requirements; run:\n  " + "\n  ".join(missing))
        console.print(f"installing requirements of {recipe.name}: " + "; ".join(missing))
        try:
            recipe.install_requirements()
        except InstallError as exc:
            raise fail(str(exc)) from None
    with progress_bars() as update:
        return recipe.prepare(out, limit=limit, progress=update)


@datasets_app.command("prepare")
def prepare_command(
    name: str = typer.Argument(..., help="dataset name (see `modalign datasets list`)"),
    out: Path = typer.Option(..., "--out", help="directory for manifest.jsonl, files and CARD.md"),
    limit: int | None = typer.Option(None, "--limit", help="only the first N concepts (quick tries)"),
    install: bool = typer.Option(True, "--install/--no-install", help="install missing apt/npm packages"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a manifest.jsonl in OUT that this "
                                   "recipe did not write"),
) -> None:
    """Write OUT/manifest.jsonl (+ files, CARD.md); re-running is incremental."""
    result = prepare_dataset(name, out, limit, install, overwrite)
    console.print(f"[green]prepared[/] {name}: {result.rows} rows, {result.groups} groups → {result.manifest}")
    for key, value in result.counts.items():
        console.print(f"  {key}: {value}")
    for note in result.notes:
        console.print(f"  [yellow]note:[/] {note}")
