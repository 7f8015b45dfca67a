"""Rendering helpers shared by the commands: progress bars, tables, error output."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=False)
err_console = Console(stderr=True, soft_wrap=True)


@contextmanager
def progress_bars() -> Iterator[Any]:
    """Yield ``update(stage, done, total)``: one bar per stage, created when the stage first reports."""
    with Progress(
        TextColumn("[bold blue]{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False,
    ) as bars:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=max(total, 1))
            bars.update(tasks[stage], completed=done, total=max(total, 1))

        yield update


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def write_errors(path: Path, errors: list[Any]) -> None:
    """errors.jsonl: one JSON object per skipped row (id, field, reason)."""
    if not errors:
        return
    with path.open("w", encoding="utf-8") as fh:
        for e in errors:
            record = e.to_json() if hasattr(e, "to_json") else dict(zip(("id", "field", "reason"), e, strict=False))
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def report_skipped(errors: list[Any], path: Path | None) -> None:
    if not errors:
        return
    where = f" (details in {path})" if path else ""
    err_console.print(f"[yellow]skipped {len(errors)} bad row(s)/item(s){where}[/]")
    for e in errors[:5]:
        if hasattr(e, "to_json"):
            j = e.to_json()
            err_console.print(f"  [dim]row {j['row']} id={j['id']} field={j['field']}: {j['reason']}[/]")
        else:
            err_console.print(f"  [dim]{e}[/]")
    if len(errors) > 5:
        err_console.print(f"  [dim]... and {len(errors) - 5} more[/]")


def metrics_table(title: str, columns: Mapping[str, Mapping[str, Mapping[str, Any]]],
                  keys: tuple[str, ...] = ("R@1", "R@5", "R@10", "MRR", "median_rank")) -> Table:
    """columns: {column label: {direction: metrics}} → one row per (direction, metric)."""
    table = Table(title=title, show_lines=False)
    table.add_column("direction")
    table.add_column("metric")
    for label in columns:
        table.add_column(label, justify="right")
    directions = list(dict.fromkeys(d for col in columns.values() for d in col))
    for d in directions:
        for i, key in enumerate(keys):
            cells = []
            for col in columns.values():
                value = col.get(d, {}).get(key)
                cells.append("-" if value is None else (f"{value:.3f}" if key != "median_rank" else f"{value:g}"))
            table.add_row(d if i == 0 else "", key, *cells, end_section=(i == len(keys) - 1))
    return table
