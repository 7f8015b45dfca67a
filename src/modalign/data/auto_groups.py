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

from modalign.data.union_find import UnionFind

#: ``PairedDataset.grouping["by"]`` when the groups were made here
AUTO_GROUPING = "identical text or file"


def normalized_text(text: str) -> str:
    return " ".join(text.casefold().split())


def file_digest(path: Path) -> str:
    """A hash of the file's bytes (blake2b, 16 bytes)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def item_keys(columns: dict[str, Sequence[Any]], kinds: dict[str, str],
              files: str = "same-size") -> Iterable[tuple[int, Hashable]]:
    """(row, key) for every text and file item: rows with an equal key hold an identical item.

    ``files``: "same-size" hashes only files whose size another file shares (a unique size cannot have a
    twin), "all" hashes every file (its twin may be in another set of rows), "none" compares texts only.
    """
    by_size: dict[int, list[tuple[int, Path]]] = defaultdict(list)
    for m, col in columns.items():
        for i, value in enumerate(col):
            if value is None:
                continue
            if kinds[m] == "text" and isinstance(value, str):
                yield i, ("text", m, normalized_text(value))
            elif files != "none" and isinstance(value, Path):
                try:
                    by_size[-1 if files == "all" else os.stat(value).st_size].append((i, value))
                except OSError:
                    continue
    for group in by_size.values():
        if len(group) < 2 and files != "all":
            continue
        for i, path in group:
            try:
                yield i, ("file", file_digest(path))
            except OSError:
                continue


def merge_identical(ids: Sequence[str], columns: dict[str, Sequence[Any]],
                    kinds: dict[str, str]) -> tuple[list[str], int]:
    """One group per set of rows linked by identical items (named by its first row's id), and how many
    rows joined another row's group."""
    sets: UnionFind[int] = UnionFind(range(len(ids)))  # the earlier row names the group
    first: dict[Hashable, int] = {}
    for i, key in item_keys(columns, kinds):
        sets.join(first.setdefault(key, i), i)
    roots = [sets.find(i) for i in range(len(ids))]
    return [ids[r] for r in roots], sum(1 for i, r in enumerate(roots) if r != i)


#: past this many rows, ``shared_items`` compares texts only (hashing every file would cost a full read)
MAX_HASHED_ROWS = 20_000


def shared_items(train: tuple[dict[str, Sequence[Any]], dict[str, str]],
                 test: tuple[dict[str, Sequence[Any]], dict[str, str]]) -> int:
    """How many test rows hold a text or file identical to one of a training row."""
    n = max((len(c) for c in train[0].values()), default=0) + max((len(c) for c in test[0].values()), default=0)
    files = "all" if n <= MAX_HASHED_ROWS else "none"
    seen = {key for _, key in item_keys(*train, files=files)}
    return len({i for i, key in item_keys(*test, files=files) if key in seen})
