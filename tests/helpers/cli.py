"""Run the ``modalign`` CLI in-process for tests."""

from __future__ import annotations

from typer.testing import CliRunner

from modalign.cli import app


def run_cli(args: list[str], code: int = 0) -> str:
    """Invoke the CLI with ``args``; assert it exits with ``code`` (the output is shown when it does not)."""
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output
