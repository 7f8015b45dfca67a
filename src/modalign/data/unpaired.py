"""Unpaired items: rows that hold one modality only, added to the training rows (``fit --unpaired``).

A held-out item must never train, paired or not: an unpaired row is dropped when its item (the same text,
the same file, the same vector) or its group is also in the held-out rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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


def item_key(item: Any) -> Any:
    """A hashable identity of an item: the text, the resolved file path, or a vector's bytes."""
    if isinstance(item, Path):
        return ("file", str(item.resolve()))
    if isinstance(item, np.ndarray):
        return ("vector", item.dtype.str, item.shape, item.tobytes())
    return ("text", str(item))


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
    held_items = {m: {item_key(v) for v in held_out.columns[m] if v is not None}
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
        if unpaired.groups[i] in held_groups or item_key(unpaired.columns[m][i]) in held_items.get(m, ()):
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
