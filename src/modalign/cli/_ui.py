"""Rendering helpers shared by the commands: progress bars, tables, error output."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from modalign._io import atomic_write_bytes, finite_json

console = Console(stderr=False)
err_console = Console(stderr=True, soft_wrap=True)


class StageBars:
    """``update(stage, done, total)``: one bar per stage, created when the stage first reports.

    Library loops report every few items, so the last report of a stage may be short of its total
    (``encode text 120/480``). A stage is over when the next one starts or the whole step ends:
    ``finish`` then sets its bar to the total so no bar is left looking unfinished.
    """

    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self.tasks: dict[str, Any] = {}
        self.totals: dict[str, int] = {}
        self.current: str | None = None

    def update(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            if self.current is not None:
                self.finish(self.current)
            self.tasks[stage] = self.bars.add_task(stage, total=max(total, 1))
        self.current = stage
        self.totals[stage] = max(total, 1)
        self.bars.update(self.tasks[stage], completed=done, total=self.totals[stage])

    def finish(self, stage: str) -> None:
        self.bars.update(self.tasks[stage], completed=self.totals[stage])

    def finish_all(self) -> None:
        for stage in self.tasks:
            self.finish(stage)


def stage_progress(console_: Console) -> Progress:
    return Progress(
        TextColumn("[bold blue]{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console_, transient=False,
    )


@contextmanager
def progress_bars() -> Iterator[Any]:
    """Yield ``update(stage, done, total)``; every bar ends at its total when the step completes."""
    with stage_progress(err_console) as bars:
        stages = StageBars(bars)
        yield stages.update
        stages.finish_all()  # not on an exception: a failed step keeps the count it reached


@contextmanager
def json_on_stdout(enabled: bool) -> Iterator[None]:
    """With ``--json``: everything printed for people goes to stderr, so stdout holds one JSON document."""
    if not enabled:
        yield
        return
    saved = console._file  # None = follow sys.stdout, which a test runner swaps per invocation
    console.file = sys.stderr
    try:
        yield
    finally:
        console._file = saved


def emit_json(document: Any) -> None:
    """The one JSON document of a ``--json`` run, on stdout (never NaN: null, with a note)."""
    sys.stdout.write(json.dumps(finite_json(document), indent=1, allow_nan=False, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def errors_jsonl(errors: list[Any]) -> bytes:
    """errors.jsonl: one JSON object per skipped row (id, field, reason)."""
    lines = []
    for e in errors:
        record = e.to_json() if hasattr(e, "to_json") else dict(zip(("id", "field", "reason"), e, strict=False))
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return "".join(lines).encode("utf-8")


def write_errors(path: Path, errors: list[Any]) -> None:
    """``errors_jsonl`` written to ``path`` (nothing when there are no errors)."""
    if not errors:
        return
    atomic_write_bytes(path, errors_jsonl(errors))


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
    """columns: {column label: {direction: metrics}} → one row per (direction, metric).

    A metric with a bootstrap interval in ``metrics["CI95"][key]`` is shown as ``value [lo, hi]``.
    """
    table = Table(title=title, show_lines=False)
    table.add_column("direction")
    table.add_column("metric")
    with_ci = any("CI95" in m for col in columns.values() for m in col.values())
    for label in columns:
        table.add_column(f"{label} [95% CI]" if with_ci else label, justify="right", no_wrap=True)
    with_chance = any("chance" in m for col in columns.values() for m in col.values())
    if with_chance:  # a random ranking of the same gallery: the floor every number above is read against
        table.add_column("chance", justify="right", no_wrap=True, style="dim")
    directions = list(dict.fromkeys(d for col in columns.values() for d in col))
    for d in directions:
        for i, key in enumerate(keys):
            cells = []
            for col in columns.values():
                metrics = col.get(d, {})
                cells.append(_cell(key, metrics.get(key), (metrics.get("CI95") or {}).get(key)))
            if with_chance:
                chance = next((col[d]["chance"] for col in columns.values() if "chance" in col.get(d, {})), {})
                cells.append(_cell(key, chance.get(key), None) if key in chance else "")
            table.add_row(d if i == 0 else "", key, *cells, end_section=(i == len(keys) - 1))
    return table


def _cell(key: str, value: Any, ci: Any) -> str:
    if value is None:
        return "-"
    spec = "g" if key == "median_rank" else ".3f"
    text = format(value, spec)
    if ci is not None and len(ci) == 2:
        text += f" [{format(ci[0], spec)}, {format(ci[1], spec)}]"
    return text
