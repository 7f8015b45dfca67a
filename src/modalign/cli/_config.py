"""``--config FILE``: a command's options from a TOML file; options given on the command line win.

Keys are the options' names as typed on the command line, without the dashes (``holdout = 0.2``,
``cv-folds = 5``, ``json = true``). One file can serve several commands with a table per command
(``[fit]``, ``[eval]``, ``[index]``, ``[serve]``); a file without such a table applies as a whole.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import click
import typer


def load_config(ctx: typer.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    """Eager ``--config`` callback: the file's values become the command's defaults (``ctx.default_map``)."""
    if value is None:
        return value
    try:
        data = tomllib.loads(value.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise typer.BadParameter(f"{value}: {exc}") from None
    section = data.get(ctx.info_name or "")
    values = section if isinstance(section, dict) else {k: v for k, v in data.items() if not isinstance(v, dict)}
    by_flag: dict[str, str] = {}
    for param in ctx.command.params:
        for opt in getattr(param, "opts", []):
            by_flag[opt.lstrip("-").replace("_", "-")] = param.name or ""
    defaults: dict[str, Any] = {}
    for key, item in values.items():
        name = by_flag.get(str(key).replace("_", "-"))
        if not name or name == "config":
            known = ", ".join(sorted(k for k, n in by_flag.items() if n not in ("config", "help")))
            raise typer.BadParameter(f"{value}: {ctx.info_name} has no option {key!r} (it takes: {known})")
        defaults[name] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def config_option() -> Any:
    return typer.Option(None, "--config", help="TOML file of this command's options (as on the command line: "
                        "holdout = 0.2); options given on the command line win", is_eager=True,
                        callback=load_config, exists=True, dir_okay=False)
