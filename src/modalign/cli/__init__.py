"""The ``modalign`` command line: one thin command per pipeline stage (typer + rich)."""

from __future__ import annotations

import logging
import os
from typing import Any

import typer
import typer.core

from modalign import __version__

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from modalign.cli.audit_cmd import audit_command
from modalign.cli.datasets_cmd import datasets_app
from modalign.cli.demo_cmd import demo_command
from modalign.cli.encoders_cmd import encoders_app
from modalign.cli.eval_cmd import eval_command
from modalign.cli.export_cmd import export_command
from modalign.cli.fit_cmd import fit_command
from modalign.cli.index_cmd import index_command
from modalign.cli.probe_cmd import probe_command
from modalign.cli.serve_cmd import serve_command

_display_type = typer.core.TyperOption.display_type_rich


def _flag_without_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """Help shows a flag without a type: typer labels it ``<bool>``, which reads as if it took a value."""
    return "" if self.is_flag else _display_type(self, ctx)


typer.core.TyperOption.display_type_rich = _flag_without_type  # type: ignore[method-assign]

app = typer.Typer(
    name="modalign",
    help="Align frozen pretrained encoders into one shared embedding space with a few thousand pairs.\n\n"
         "Encoded features are cached in $MODALIGN_CACHE (default ~/.cache/modalign/features; --cache DIR "
         "per command): reruns encode nothing, and deleting the folder only costs re-encoding. "
         "Exit codes: 0 ok, 2 bad input, 3 environment (a busy port, a missing package).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
app.add_typer(datasets_app, name="datasets")
app.add_typer(encoders_app, name="encoders")
app.command("fit")(fit_command)
app.command("eval")(eval_command)
app.command("demo")(demo_command)
app.command("probe")(probe_command)
app.command("index")(index_command)
app.command("serve")(serve_command)
app.command("export")(export_command)
app.command("audit")(audit_command)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"modalign {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log what the library does"),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="print the version and exit"),
) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # library warnings (PIL's DecompressionBombWarning, ...) as one log line each, not raw warning text
    logging.captureWarnings(True)
