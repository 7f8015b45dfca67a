"""PairedDataset: validated manifest rows, one column per modality (missing allowed)."""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modalign.data.manifest import read_rows
from modalign.data.modality import NO_MODALITIES
from modalign.data.rows import MAX_TEXT_CHARS, RowError
from modalign.data.validate import RowValidator
from modalign.errors import ManifestError

OnError = Literal["skip", "fail"]

__all__ = ["MAX_TEXT_CHARS", "OnError", "PairedDataset", "RowError", "split_indices"]

@dataclass
class PairedDataset:
    """Rows of paired items. ``columns[m][i]`` is row i's item of modality m, or None when missing.

    Items are ready for an encoder: ``str`` for text, absolute ``Path`` for image/audio files,
    float32 ``np.ndarray`` (or a ``Path`` to a .npy) for vectors.
    """

    ids: list[str]
    groups: list[str]
    columns: dict[str, list[Any]]
    kinds: dict[str, str]
    root: Path = field(default_factory=Path.cwd)
    meta: dict[str, list[Any]] = field(default_factory=dict)
    errors: list[RowError] = field(default_factory=list)
    source: Path | None = None
    #: how ``groups`` were made: ``{"by": "group"}`` (the manifest's column), ``{"by": FIELD}`` (``group_by``)
    #: or ``{"by": "identical text or file", "merged_rows": N}`` when the manifest names no groups
    grouping: dict[str, Any] = field(default_factory=lambda: {"by": "group"})

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.groups) != n or any(len(col) != n for col in self.columns.values()):
            raise ValueError("ids, groups and every column must have the same length")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def modalities(self) -> list[str]:
        return list(self.columns)

    def kind(self, modality: str) -> str:
        return self.kinds[modality]

    def present(self, modality: str) -> np.ndarray:
        """Boolean mask of rows that have ``modality``."""
        self._check(modality)
        return np.array([v is not None for v in self.columns[modality]], dtype=bool)

    def items(self, modality: str, indices: Iterable[int] | None = None) -> list[Any]:
        self._check(modality)
        col = self.columns[modality]
        return list(col) if indices is None else [col[i] for i in indices]

    def _check(self, modality: str) -> None:
        if modality not in self.columns:
            raise KeyError(f"modality {modality!r} is not in the dataset; it has {self.modalities}")

    def subset(self, indices: Sequence[int] | np.ndarray) -> PairedDataset:
        idx = [int(i) for i in indices]
        return PairedDataset(
            ids=[self.ids[i] for i in idx],
            groups=[self.groups[i] for i in idx],
            columns={m: [col[i] for i in idx] for m, col in self.columns.items()},
            kinds=dict(self.kinds),
            root=self.root,
            meta={k: [col[i] for i in idx] for k, col in self.meta.items()},
            errors=[],
            source=self.source,
            grouping=dict(self.grouping),
        )

    def select_modalities(self, modalities: Sequence[str]) -> PairedDataset:
        for m in modalities:
            self._check(m)
        return PairedDataset(
            ids=list(self.ids), groups=list(self.groups),
            columns={m: self.columns[m] for m in modalities}, kinds={m: self.kinds[m] for m in modalities},
            root=self.root, meta=dict(self.meta), errors=list(self.errors), source=self.source,
            grouping=dict(self.grouping),
        )

    def split(self, holdout: float = 0.2, seed: int = 0, *,
              test_fraction: float | None = None) -> tuple[PairedDataset, PairedDataset]:
        """Concept-disjoint split: the share ``holdout`` of the groups goes to test, whole (``--holdout``).
        Stable across runs and row order. ``test_fraction`` is its former name (deprecated)."""
        if test_fraction is not None:
            warnings.warn("split(test_fraction=...) is now split(holdout=...), as the CLI's --holdout",
                          DeprecationWarning, stacklevel=2)
            holdout = test_fraction
        train_idx, test_idx = split_indices(self.groups, holdout, seed)
        return self.subset(train_idx), self.subset(test_idx)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_manifest(
        cls, path: str | Path, on_error: OnError = "skip", allow_outside_root: bool = False,
        group_by: str | None = None,
    ) -> PairedDataset:
        """Read and validate a manifest. ``fail``: raise one ManifestError listing the bad rows.

        Groups come from the ``group`` field, or from ``group_by``'s; when no row has one, rows that share
        an identical text or file are grouped (``grouping`` says how many merged)."""
        path = Path(path).resolve()
        return cls.from_rows(
            read_rows(path), root=path.parent, on_error=on_error,
            allow_outside_root=allow_outside_root, source=path, group_by=group_by,
        )

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[tuple[int, dict[str, Any] | str]] | Iterable[dict[str, Any]],
        root: str | Path,
        on_error: OnError = "skip",
        allow_outside_root: bool = False,
        source: Path | None = None,
        group_by: str | None = None,
    ) -> PairedDataset:
        validator = RowValidator(Path(root).resolve(), allow_outside_root, group_by)
        for number, row in _numbered(rows):
            validator.add(number, row)
        validator.finish()
        no_modalities = None if validator.kinds else validator.no_modalities_reason()
        errors = validator.errors
        if on_error == "fail" and errors:
            raise ManifestError(
                str(source or root), [(e.row, e.field, e.reason) for e in errors[:20]], total=len(errors)
            )
        ds = validator.build(cls, source)
        if not ds.columns:
            raise ManifestError(str(source or root), [("-", "-", no_modalities or NO_MODALITIES)])
        return ds


def _numbered(rows: Iterable[Any]) -> Iterable[tuple[int, Any]]:
    for i, row in enumerate(rows, start=1):
        if isinstance(row, tuple) and len(row) == 2 and isinstance(row[0], int):
            yield row
        else:
            yield i, row


def _group_rank(group: str, seed: int) -> int:
    digest = hashlib.blake2b(f"{seed}\x00{group}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def split_indices(groups: Sequence[str], test_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices of (train, test): ``round(test_fraction * n_groups)`` whole groups go to test.

    Groups are ordered by a seeded hash of their name, so a group's side does not depend on the
    row order or on which other rows exist in the file.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    unique = sorted(set(groups), key=lambda g: (_group_rank(g, seed), g))
    n_test = math.floor(test_fraction * len(unique) + 0.5)
    if test_fraction > 0 and len(unique) > 1:
        n_test = min(max(n_test, 1), len(unique) - 1)
    test_groups = set(unique[:n_test])
    train = [i for i, g in enumerate(groups) if g not in test_groups]
    test = [i for i, g in enumerate(groups) if g in test_groups]
    return train, test
