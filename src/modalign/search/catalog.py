"""What an index knows besides vectors: its entries (one per unique item) and the rows that use them.

An *entry* is one unique item of one modality (identical texts or files shared by several manifest
rows are embedded and stored once; they are told apart by their content key). A *row* is a manifest
row: its id, its metadata and, per modality, the entry holding its item. An entry is alive while at
least one row uses it; deleting a row or an entry only drops references.

The catalog changes only by applying a :class:`Segment`, the unit that is also written to disk, so
replaying the segments of an index folder rebuilds exactly this state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Segment:
    """One append-only change: new entries (with their vectors), row upserts and deletions."""

    # id, modality, kind, key, text, path (+ root, root_from_index: see sources.py)
    entries: list[dict[str, Any]] = field(default_factory=list)
    vectors: np.ndarray | None = None  # (len(entries), dim) float32
    rows: list[dict[str, Any]] = field(default_factory=list)  # id, meta, items {modality: entry id}
    deleted_rows: list[str] = field(default_factory=list)
    deleted_entries: list[str] = field(default_factory=list)

    def log(self) -> dict[str, Any]:
        return {"entries": self.entries, "rows": self.rows, "deleted_rows": self.deleted_rows,
                "deleted_entries": self.deleted_entries}

    def is_empty(self) -> bool:
        return not (self.entries or self.rows or self.deleted_rows or self.deleted_entries)


class Catalog:
    """Entries by position (the ids the search backends use) and rows by id."""

    def __init__(self) -> None:
        self.entry_ids: list[str] = []
        self.modality: list[str] = []
        self.kind: list[str] = []
        self.key: list[str] = []
        self.text: list[str | None] = []
        self.path: list[str | None] = []  # as stored: relative to the entry's root, or absolute
        self.root: list[tuple[str | None, str | None] | None] = []  # (root, root_from_index), shared tuples
        self._roots: dict[tuple[str | None, str | None], tuple[str | None, str | None]] = {}
        self.position: dict[str, int] = {}
        self.by_key: dict[tuple[str, str], int] = {}
        self.rows: dict[str, dict[str, Any]] = {}  # id -> {"meta": {...}, "items": {modality: position}}
        self.refs: list[set[str]] = []  # position -> ids of the rows using it

    def __len__(self) -> int:
        return len(self.entry_ids)

    def alive(self, position: int) -> bool:
        return bool(self.refs[position])

    def alive_mask(self) -> np.ndarray:
        return np.fromiter((bool(r) for r in self.refs), dtype=bool, count=len(self.refs))

    def modalities(self) -> list[str]:
        return list(dict.fromkeys(self.modality))

    def unused_entry_id(self, wanted: str) -> str:
        if wanted not in self.position:
            return wanted
        n = 2
        while f"{wanted}~{n}" in self.position:
            n += 1
        return f"{wanted}~{n}"

    # ---------------------------------------------------------------- changes
    def apply(self, segment: Segment) -> set[int]:
        """Apply ``segment``; return the positions whose alive state may have changed."""
        touched: set[int] = set()
        for entry in segment.entries:
            pos = len(self.entry_ids)
            if entry["id"] in self.position:
                raise ValueError(f"index log adds entry {entry['id']!r} twice")
            self.entry_ids.append(entry["id"])
            self.modality.append(entry["modality"])
            self.kind.append(entry["kind"])
            self.key.append(entry["key"])
            self.text.append(entry.get("text"))
            self.path.append(entry.get("path"))
            self.root.append(self._root_of(entry))
            self.position[entry["id"]] = pos
            self.by_key[(entry["modality"], entry["key"])] = pos
            self.refs.append(set())
            touched.add(pos)
        for row_id in segment.deleted_rows:
            touched |= self._drop_row(row_id)
        for entry_id in segment.deleted_entries:
            pos = self.position.get(entry_id)
            if pos is None:
                continue
            for row_id in list(self.refs[pos]):
                items = self.rows[row_id]["items"]
                for m in [m for m, p in items.items() if p == pos]:
                    del items[m]
            self.refs[pos].clear()
            touched.add(pos)
        for row in segment.rows:
            touched |= self._drop_row(row["id"])
            items = {}
            for m, entry_id in row["items"].items():
                pos = self.position[entry_id]
                items[m] = pos
                self.refs[pos].add(row["id"])
                touched.add(pos)
            self.rows[row["id"]] = {"meta": row.get("meta") or {}, "items": items}
        return touched

    def _root_of(self, entry: dict[str, Any]) -> tuple[str | None, str | None] | None:
        if entry.get("root") is None and entry.get("root_from_index") is None:
            return None
        key = (entry.get("root"), entry.get("root_from_index"))
        return self._roots.setdefault(key, key)  # one tuple per folder, however many entries it holds

    def _drop_row(self, row_id: str) -> set[int]:
        row = self.rows.pop(row_id, None)
        if row is None:
            return set()
        for pos in row["items"].values():
            self.refs[pos].discard(row_id)
        return set(row["items"].values())

    # ---------------------------------------------------------------- reading
    def entry(self, position: int) -> dict[str, Any]:
        """The entry as it was added (what a segment log holds), e.g. to rewrite it elsewhere."""
        fields: dict[str, Any] = {"id": self.entry_ids[position], "modality": self.modality[position],
                                  "kind": self.kind[position], "key": self.key[position],
                                  "text": self.text[position], "path": self.path[position]}
        root = self.root[position]
        if root is not None:
            fields["root"], fields["root_from_index"] = root
        return fields

    def rows_of(self, position: int) -> list[str]:
        return sorted(self.refs[position])

    def caption(self, position: int) -> str | None:
        """Text shown with an entry: its own text, else the text of the first row that uses it."""
        if self.text[position] is not None:
            return self.text[position]
        for row_id in self.rows_of(position):
            items = self.rows[row_id]["items"]
            texts = sorted((m != "text", m) for m in items if self.kind[items[m]] == "text")
            if texts:
                return self.text[items[texts[0][1]]]
        return None

    def meta(self, position: int) -> dict[str, Any]:
        rows = self.rows_of(position)
        return dict(self.rows[rows[0]]["meta"]) if rows else {}

    def resolve(self, ids: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
        """Split ``ids`` into (row ids, entry ids, unknown ids); a row id wins when both match."""
        rows, entries, unknown = [], [], []
        for i in ids:
            if i in self.rows:
                rows.append(i)
            elif i in self.position and self.alive(self.position[i]):
                entries.append(i)
            else:
                unknown.append(i)
        return rows, entries, unknown
