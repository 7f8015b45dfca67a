"""Read a manifest (JSONL, CSV or Parquet) into raw rows, keeping each row's source line number."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modalign.data.modality import NO_MODALITIES, missing_modalities_reason, modality_kind
from modalign.errors import ManifestError

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")

_UTF8_BOM = b"\xef\xbb\xbf"
#: byte-order marks of encodings we do not read (UTF-32 LE before UTF-16 LE: it starts with the same two bytes)
_FOREIGN_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                 (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


#: a manifest line longer than this is a row error, never read whole (inline vectors of 100k floats fit)
MAX_LINE_BYTES = 16 << 20


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
    for lineno, line, problem in _decoded_lines(path):
        if problem is not None:
            yield lineno, problem
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield lineno, f"invalid JSON: {exc.msg} at column {exc.colno}"
            continue
        except RecursionError:
            yield lineno, "invalid JSON: nested too deeply"
            continue
        except ValueError as exc:  # an integer of thousands of digits (Python's int string limit)
            yield lineno, f"invalid JSON: {exc}"
            continue
        if not isinstance(row, dict):
            yield lineno, f"expected a JSON object, got {type(row).__name__}"
            continue
        yield lineno, row


def _decoded_lines(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line number, text, problem) per line: a leading UTF-8 BOM (Excel) is dropped, and a line that is
    not UTF-8 comes with a problem naming the byte instead of being silently replaced."""
    with path.open("rb") as fh:
        head = fh.read(4)
        for bom, name in _FOREIGN_BOMS:
            if head.startswith(bom):
                raise ManifestError(str(path), [(1, "-", f"{NO_MODALITIES}: the file is {name} (it starts with a "
                                                         f"{name} byte-order mark); save it as UTF-8")])
        fh.seek(len(_UTF8_BOM) if head.startswith(_UTF8_BOM) else 0)
        lineno = 0
        while raw := fh.readline(MAX_LINE_BYTES + 1):
            lineno += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while (rest := fh.readline(1 << 20)) and not rest.endswith(b"\n"):  # skip it without keeping it
                    pass
                yield lineno, "", f"line longer than {MAX_LINE_BYTES // (1 << 20)} MiB; not read"
                continue
            try:
                yield lineno, raw.decode("utf-8"), None
            except UnicodeDecodeError as exc:
                problem = f"invalid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); save as UTF-8"
                yield lineno, raw.decode("utf-8", errors="replace"), problem


def _header_problem(header: list[str]) -> str | None:
    """Why a header names no modality field (the delimiter, case, a stray BOM), or None when it names one."""
    if any(modality_kind(name) for name in header):
        return None
    return missing_modalities_reason(header, "the header is")


def _csv_value(value: str | None) -> Any:
    # CSV has no null: an empty cell means missing; a cell holding a JSON list is a vector
    if value is None or value == "":
        return None
    stripped = value.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            return json.loads(stripped)
        except ValueError:  # not JSON, or an integer past Python's digit limit: kept as text
            return value
    return value


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    bad: dict[int, str] = {}

    def text_lines() -> Iterator[str]:
        for lineno, text, problem in _decoded_lines(path):
            if problem is not None:
                bad[lineno] = problem
            yield text

    # newline handling is csv's own: quoted cells may hold line breaks (CRLF or LF)
    reader = csv.reader(text_lines())
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ManifestError(str(path), [(1, "-", f"malformed CSV header: {exc}")]) from None
    if header is None:
        raise ManifestError(str(path), [(1, "-", f"{NO_MODALITIES}: the file is empty")])
    if 1 in bad:
        raise ManifestError(str(path), [(1, "-", f"header: {bad[1]}")])
    problem = _header_problem(header)
    if problem is not None:
        raise ManifestError(str(path), [(1, "-", problem)])
    last = reader.line_num
    while True:
        first = last + 1
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            last = reader.line_num
            yield last, f"malformed CSV: {exc}"
            continue
        if cells is None:
            return
        last = reader.line_num
        problem = next((bad[n] for n in range(first, last + 1) if n in bad), None)
        if problem is not None:
            yield last, problem
        elif not cells:
            continue  # a blank line, as csv.DictReader skips it
        elif len(cells) > len(header):
            yield last, "more cells than header columns"
        else:
            yield last, {k: _csv_value(v) for k, v in zip(header, cells + [""] * (len(header) - len(cells)),
                                                          strict=True)}


def _read_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises many types for a corrupt file
        raise ManifestError(str(path), [("-", "-", f"cannot read Parquet: {exc}")]) from None
    yield from enumerate(table.to_pylist())
