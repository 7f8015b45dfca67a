"""Write (part of) a ``PairedDataset`` back as a JSONL manifest that ``PairedDataset.from_manifest`` reads."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalign._io import atomic_write_bytes
from modalign.data.dataset import PairedDataset


def write_manifest(dataset: PairedDataset, path: str | Path, rows: Sequence[int],
                   groups: Sequence[str] | None = None) -> bool:
    """Write ``rows`` of ``dataset`` to the JSONL manifest ``path`` (atomically), with ``groups`` (one per row of
    the dataset) in place of its groups. Files are written relative to the new manifest's folder when they lie
    inside it; returns True when some lie outside (that manifest then needs ``--allow-outside-root``)."""
    path = Path(path)
    folder = path.resolve().parent
    groups = list(groups) if groups is not None else dataset.groups
    outside = False
    lines = []
    for r in rows:
        row: dict[str, Any] = {"id": dataset.ids[r], "group": groups[r]}
        for m, column in dataset.columns.items():
            value = column[r]
            if value is None:
                continue
            if isinstance(value, Path):
                full = value.resolve()
                inside = full.is_relative_to(folder)
                outside = outside or not inside
                value = os.path.relpath(full, folder) if inside else str(full)
            elif isinstance(value, np.ndarray):
                value = value.astype(float).tolist()
            row[m] = value
        for key, column in dataset.meta.items():
            if column[r] is not None:
                row[key] = column[r]
        lines.append(json.dumps(row, ensure_ascii=False))
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode() if lines else b"")
    return outside
