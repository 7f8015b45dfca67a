"""``modalign datasets list | prepare``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from modalign.cli._ui import console, fail, progress_bars
from modalign.data.recipes.base import DatasetRecipe, PrepareResult

datasets_app = typer.Typer(help="Built-in paired datasets that install from apt/npm/pip.", no_args_is_help=True)


@datasets_app.command("list")
def list_command() -> None:
    """Show every built-in dataset: modalities, size, licence, install source."""
    from modalign.data.recipes import DATASETS

    table = Table(title="modalign datasets")
    for col in ("name", "modalities", "size", "licence", "source", "ready"):
        table.add_column(col)
    for name in DATASETS.names():
        recipe = DATASETS.create(name)
        missing = recipe.missing_requirements()
        table.add_row(name, ", ".join(recipe.modalities), recipe.approx_size, recipe.licence, recipe.source,
                      "[green]yes[/]" if not missing else "[yellow]installs on prepare[/]")
    console.print(table)


def prepare_dataset(name: str, out: Path, limit: int | None, install: bool = True) -> PrepareResult:
    from modalign.data.recipes import DATASETS

    try:
        recipe = DATASETS.create(name)
    except KeyError as exc:
        raise fail(str(exc).strip("'\"")) from None
    return prepare_recipe(recipe, out, limit, install)


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
) -> None:
    """Write OUT/manifest.jsonl (+ files, CARD.md); re-running is incremental."""
    result = prepare_dataset(name, out, limit, install)
    console.print(f"[green]prepared[/] {name}: {result.rows} rows, {result.groups} groups → {result.manifest}")
    for key, value in result.counts.items():
        console.print(f"  {key}: {value}")
    for note in result.notes:
        console.print(f"  [yellow]note:[/] {note}")
