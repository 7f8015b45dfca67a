"""``modalign encoders list``: the encoders ``--encoders`` can name."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from modalign.cli._ui import console

encoders_app = typer.Typer(help="Encoders: built-in, plugins (entry points) and spec forms.", no_args_is_help=True)


@encoders_app.command("list")
def list_command(
    load: bool = typer.Option(False, "--load", help="instantiate installed encoders for their real dims/layers "
                              "(loads weights)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Name, modality kind, dims, layers, runtimes (the `runtime` option, default first), source package and
    whether it is installed."""
    from modalign.encoders.catalog import list_encoders

    infos = list_encoders(load=load)
    if as_json:
        typer.echo(json.dumps([i.to_json() for i in infos], indent=1))
        return
    table = Table(title="encoders")
    for col in ("name", "kind", "dim", "layers", "runtimes", "package", "installed", "source"):
        table.add_column(col)
    for i in infos:
        layers = (f"{i.layers[0]}..{i.layers[-1]} ({len(i.layers)})" if len(i.layers) > 2 else ", ".join(i.layers))
        table.add_row(i.name, i.kind, "-" if i.dim is None else str(i.dim), layers or "-",
                      "|".join(i.runtimes) or "-", i.package,
                      "yes" if i.installed else ("-" if i.source == "spec" else "no"), i.source)
    console.print(table)
