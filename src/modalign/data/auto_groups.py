"""Groups for manifests that give none: rows that share an identical text or file are one concept.

Without a ``group`` column every row is its own group, so two rows with the same caption (two icon
styles of one concept) or the same image file would land on both sides of a split and leak. Texts
count as identical after case folding and whitespace collapsing; files when their bytes are (only
files of equal size are hashed). Vectors are never compared.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

#: ``PairedDataset.grouping["by"]`` when the groups were made here
AUTO_GROUPING = "identical text or file"


def normalized_text(text: str) -> str:
    return " ".join(text.casefold().split())


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def item_keys(columns: dict[str, Sequence[Any]], kinds: dict[str, str]) -> Iterable[tuple[int, Hashable]]:
    """(row, key) for every text and file item: rows with an equal key hold an identical item."""
    files: dict[int, list[tuple[int, Path]]] = defaultdict(list)
    for m, col in columns.items():
        for i, value in enumerate(col):
            if value is None:
                continue
            if kinds[m] == "text" and isinstance(value, str):
                yield i, ("text", m, normalized_text(value))
            elif isinstance(value, Path):
                try:
                    files[os.stat(value).st_size].append((i, value))
                except OSError:
                    continue
    for same_size in files.values():
        if len(same_size) < 2:
            continue
        for i, path in same_size:
            try:
                yield i, ("file", _file_digest(path))
            except OSError:
                continue


def merge_identical(ids: Sequence[str], columns: dict[str, Sequence[Any]],
                    kinds: dict[str, str]) -> tuple[list[str], int]:
    """One group per set of rows linked by identical items (named by its first row's id), and how many
    rows joined another row's group."""
    parent = list(range(len(ids)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[Hashable, int] = {}
    for i, key in item_keys(columns, kinds):
        j = first.setdefault(key, i)
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)  # the earlier row names the group
    groups = [ids[root(i)] for i in range(len(ids))]
    return groups, sum(1 for i in range(len(ids)) if root(i) != i)


#: past this many rows, ``shared_items`` compares texts only (hashing every file would cost a full read)
MAX_HASHED_ROWS = 20_000


def shared_items(train: tuple[dict[str, Sequence[Any]], dict[str, str]],
                 test: tuple[dict[str, Sequence[Any]], dict[str, str]]) -> int:
    """How many test rows hold a text or file identical to one of a training row."""
    n = max((len(c) for c in train[0].values()), default=0) + max((len(c) for c in test[0].values()), default=0)
    files = n <= MAX_HASHED_ROWS
    seen = {key for _, key in _all_keys(*train, files)}
    return len({i for i, key in _all_keys(*test, files) if key in seen})


def _all_keys(columns: dict[str, Sequence[Any]], kinds: dict[str, str],
              files: bool = True) -> Iterable[tuple[int, Hashable]]:
    """Like ``item_keys``, but every file is hashed (its partner may be in the other part)."""
    for m, col in columns.items():
        for i, value in enumerate(col):
            if value is None:
                continue
            if kinds[m] == "text" and isinstance(value, str):
                yield i, ("text", m, normalized_text(value))
            elif files and isinstance(value, Path):
                try:
                    yield i, ("file", _file_digest(value))
                except OSError:
                    continue
