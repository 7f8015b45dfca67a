"""Read a manifest (JSONL, CSV or Parquet) into raw rows, keeping each row's source line number."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modalign.errors import ManifestError

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Yield (row number, row dict) — or (row number, reason) for a line that is not an object.

    Row numbers are what a person finds in the file: 1-based lines for JSONL and CSV (the header
    is line 1), 0-based row indices for Parquet.
    """
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ManifestError(str(path), [("-", "-", "manifest file does not exist")])
    if suffix in (".jsonl", ".json"):
        yield from _read_jsonl(path)
    elif suffix == ".csv":
        yield from _read_csv(path)
    elif suffix == ".parquet":
        yield from _read_parquet(path)
    else:
        raise ManifestError(
            str(path), [("-", "-", f"unsupported manifest type {suffix!r}; use one of {SUPPORTED_SUFFIXES}")]
        )


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, f"invalid JSON: {exc.msg} at column {exc.colno}"
                continue
            if not isinstance(row, dict):
                yield lineno, f"expected a JSON object, got {type(row).__name__}"
                continue
            yield lineno, row


def _csv_value(value: str | None) -> Any:
    # CSV has no null: an empty cell means missing; a cell holding a JSON list is a vector
    if value is None or value == "":
        return None
    stripped = value.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return value
    return value


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            lineno = reader.line_num
            if None in row:
                yield lineno, "more cells than header columns"
                continue
            yield lineno, {k: _csv_value(v) for k, v in row.items()}


def _read_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises many types for a corrupt file
        raise ManifestError(str(path), [("-", "-", f"cannot read Parquet: {exc}")]) from None
    yield from enumerate(table.to_pylist())
