"""Unpaired items: rows that hold one modality only, added to the training rows (``fit --unpaired``).

A held-out item must never train, paired or not: an unpaired row is dropped when its item or its group is also
in the held-out rows. Items are compared by content, as the automatic groups compare them: a text after case
folding and whitespace collapsing, a file by its bytes (hashed only when a held-out file has its size), a vector
by its bytes. A held-out image copied under another name is still held out.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modalign.data.auto_groups import file_digest, normalized_text
from modalign.data.dataset import PairedDataset


@dataclass
class UnpairedReport:
    """What ``with_unpaired`` kept and dropped, per modality, for metrics and the CLI."""

    kept: dict[str, int] = field(default_factory=dict)
    dropped_held_out: int = 0
    dropped_empty: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"kept": dict(self.kept), "dropped_held_out": self.dropped_held_out,
                "dropped_without_modality": self.dropped_empty}


class HeldOutItems:
    """The held-out items of one modality, by content: ``item in held`` for a text, a file path or a vector."""

    def __init__(self, items: Iterable[Any]) -> None:
        self._texts: set[str] = set()
        self._vectors: set[tuple[str, tuple[int, ...], bytes]] = set()
        self._files_by_size: dict[int, list[Path]] = defaultdict(list)
        self._digests: dict[int, set[str]] = {}  # per size, hashed on the first file of that size asked about
        for item in items:
            if isinstance(item, Path):
                size = _size(item)
                if size is not None:
                    self._files_by_size[size].append(item)
            elif isinstance(item, np.ndarray):
                self._vectors.add(_vector_key(item))
            elif item is not None:
                self._texts.add(normalized_text(str(item)))

    def __contains__(self, item: Any) -> bool:
        if isinstance(item, np.ndarray):
            return _vector_key(item) in self._vectors
        if not isinstance(item, Path):
            return normalized_text(str(item)) in self._texts
        size = _size(item)
        if size is None or size not in self._files_by_size:
            return False
        if size not in self._digests:
            self._digests[size] = {d for p in self._files_by_size[size] if (d := _digest(p)) is not None}
        return _digest(item) in self._digests[size]


def _size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _digest(path: Path) -> str | None:
    try:
        return file_digest(path)
    except OSError:
        return None


def _vector_key(vector: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    return vector.dtype.str, vector.shape, np.ascontiguousarray(vector).tobytes()


def with_unpaired(train: PairedDataset, unpaired: PairedDataset, modalities: Sequence[str],
                  held_out: PairedDataset | None = None) -> tuple[PairedDataset, UnpairedReport]:
    """``train`` followed by the rows of ``unpaired`` that hold exactly one of ``modalities``.

    A row of ``unpaired`` with two or more of them is refused (ValueError naming it): its pairing would be
    thrown away silently. Rows with none are dropped and counted; so are rows whose item or group is in
    ``held_out``."""
    mods = list(modalities)
    missing = [m for m in mods if m not in unpaired.columns]
    if len(missing) == len(mods):
        raise ValueError(f"the unpaired rows hold none of the modalities {mods}; they have {unpaired.modalities}")
    for m in mods:
        if m in unpaired.columns and m in train.columns and unpaired.kind(m) != train.kind(m):
            raise ValueError(f"unpaired modality {m!r} is {unpaired.kind(m)}, but the training rows' is "
                             f"{train.kind(m)}")
    held_items = {m: HeldOutItems(held_out.columns[m])
                  for m in mods if held_out is not None and m in held_out.columns}
    held_groups = set(held_out.groups) if held_out is not None else set()
    report = UnpairedReport(kept={m: 0 for m in mods})
    keep: list[int] = []
    for i in range(len(unpaired)):
        has = [m for m in mods if m in unpaired.columns and unpaired.columns[m][i] is not None]
        if len(has) > 1:
            raise ValueError(f"unpaired row {unpaired.ids[i]!r} holds {' and '.join(has)}: an unpaired row holds one "
                             "modality (give pairs in the training manifest)")
        if not has:
            report.dropped_empty += 1
            continue
        m = has[0]
        if unpaired.groups[i] in held_groups or (m in held_items and unpaired.columns[m][i] in held_items[m]):
            report.dropped_held_out += 1
            continue
        keep.append(i)
        report.kept[m] += 1
    extra = unpaired.subset(keep)
    columns = {m: list(train.columns[m]) + list(extra.columns.get(m, [None] * len(extra))) for m in train.columns}
    meta = {k: list(v) + [None] * len(extra) for k, v in train.meta.items()}
    combined = PairedDataset(ids=list(train.ids) + list(extra.ids), groups=list(train.groups) + list(extra.groups),
                             columns=columns, kinds=dict(train.kinds), root=train.root, meta=meta,
                             errors=list(train.errors) + list(unpaired.errors), source=train.source,
                             grouping=dict(train.grouping))
    return combined, report
