"""Row-by-row manifest validation; every problem names its row, id and field."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modalign.data.auto_groups import AUTO_GROUPING, merge_identical
from modalign.data.modality import NO_MODALITIES, is_non_modality_field, missing_modalities_reason, modality_kind
from modalign.data.rows import MAX_TEXT_CHARS, RowError
from modalign.data.vector_values import float32_vector, majority_dim

if TYPE_CHECKING:  # the annotation of build() only; never imported at run time
    from modalign.data.dataset import PairedDataset


class RowValidator:
    """Accumulates valid rows and the errors of invalid ones (a bad row is dropped whole)."""

    def __init__(self, root: Path, allow_outside_root: bool = False, group_by: str | None = None) -> None:
        self._RowError = RowError
        self.group_by = group_by
        self.saw_group = False  # some row named its group: no automatic grouping then
        self.root = root
        self.allow_outside_root = allow_outside_root
        self.errors: list[RowError] = []
        self.kinds: dict[str, str] = {}
        self.rows: list[dict[str, Any]] = []
        self.meta_fields: list[str] = []
        self._seen_ids: dict[str, int | str] = {}
        self._unknown_reported: set[str] = set()
        self._empty_modalities: set[str] = set()  # modality fields seen only as null
        self._rows_read = 0

    def _error(self, row: int | str, row_id: str | None, field: str, reason: str) -> None:
        self.errors.append(self._RowError(row, row_id, field, reason))

    def add(self, number: int | str, row: dict[str, Any] | str) -> None:
        self._rows_read += 1
        if isinstance(row, str):  # the reader could not parse this line
            self._error(number, None, "-", row)
            return
        raw_id = row.get("id")
        if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
            self._error(number, None, "id", "missing id")
            return
        if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
            self._error(number, None, "id", f"id must be a string or integer, got {type(raw_id).__name__}")
            return
        row_id = str(raw_id)
        if any(ord(c) < 32 or ord(c) == 127 for c in row_id):  # a newline in an id breaks URLs and log lines
            self._error(number, repr(row_id)[1:-1][:80], "id", "id holds a control character (newline, tab, ...)")
            return
        if row_id in self._seen_ids:
            self._error(number, row_id, "id", f"duplicate id (first seen at row {self._seen_ids[row_id]})")
            return
        group_field = self.group_by or "group"
        group = row.get(group_field)
        if group is not None and (not isinstance(group, (str, int)) or isinstance(group, bool)):
            self._error(number, row_id, group_field, f"group must be a string, got {type(group).__name__}")
            return
        if group is None and self.group_by:
            self._error(number, row_id, group_field, f"no {group_field!r} field to group by (--group-by)")
            return
        self.saw_group = self.saw_group or group is not None

        clean: dict[str, Any] = {"id": row_id, "group": str(group) if group is not None else row_id}
        problems: list[tuple[str, str]] = []
        for key, value in row.items():
            # the --group-by field is the group, not an unknown field (unless it is a modality or meta_ field too)
            if key in ("id", "group") or (key == group_field and modality_kind(key) is None
                                          and not is_non_modality_field(key)):
                continue
            if is_non_modality_field(key):
                if key not in self.meta_fields:
                    self.meta_fields.append(key)
                clean[key] = value
                continue
            kind = modality_kind(key)
            if kind is None:
                if key not in self._unknown_reported:
                    self._unknown_reported.add(key)
                    self._error(
                        number, row_id, key,
                        "unknown field: not a modality (text*, image*, audio*, vector, vec_*) — "
                        "prefix it with 'meta_' to keep it as metadata; the field is ignored",
                    )
                continue
            if value is None:
                self._empty_modalities.add(key)
                continue
            try:
                clean[key] = self._item(kind, value)
            except ValueError as exc:
                problems.append((key, str(exc)))
                continue
            self.kinds.setdefault(key, kind)
        if problems:
            for key, reason in problems:
                self._error(number, row_id, key, reason)
            return
        self._seen_ids[row_id] = number
        self.rows.append(clean)

    def _item(self, kind: str, value: Any) -> Any:
        if kind == "text":
            if not isinstance(value, str):
                raise ValueError(f"text must be a string, got {type(value).__name__}")
            if not value.strip():
                raise ValueError("empty text")
            if len(value) > MAX_TEXT_CHARS:
                raise ValueError(f"text has {len(value)} characters (limit {MAX_TEXT_CHARS})")
            return value
        if kind in ("image", "audio"):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{kind} must be a file path string, got {type(value).__name__}")
            return self._path(value)
        # vector: inline list of numbers or a .npy path
        if isinstance(value, str):
            return self._path(value)
        if isinstance(value, (list, tuple)):
            return float32_vector(value)  # the column's dimension is settled in finish(), by majority
        raise ValueError(f"vector must be a list of numbers or a .npy path, got {type(value).__name__}")

    def finish(self) -> None:
        """Drop rows whose inline vector disagrees with its column's majority dimension (not the first row's)."""
        for key in [k for k, kind in self.kinds.items() if kind == "vector"]:
            dim = majority_dim(len(r[key]) for r in self.rows if isinstance(r.get(key), np.ndarray))
            keep = []
            for r in self.rows:
                vec = r.get(key)
                if dim is not None and isinstance(vec, np.ndarray) and len(vec) != dim:
                    self._error(self._seen_ids[r["id"]], r["id"], key,
                                f"vector has {len(vec)} values, most rows of the column have {dim}")
                else:
                    keep.append(r)
            self.rows = keep

    def no_modalities_reason(self) -> str:
        """The real cause when no modality column came out: no rows, every row rejected, names, or nulls."""
        if self._rows_read == 0:
            return f"{NO_MODALITIES}: the file has no rows"
        if not self.rows and self.errors:
            first = self.errors[0]
            return (f"{NO_MODALITIES}: every one of the {self._rows_read} rows was rejected; the first, row "
                    f"{first.row} field {first.field!r}: {first.reason}")
        empty = sorted(self._empty_modalities - set(self.kinds))
        if empty:
            return f"{NO_MODALITIES}: the fields {empty} are empty (null) in every row"
        fields = sorted(self._unknown_reported)
        if fields:
            return missing_modalities_reason(fields, "the fields are")
        return f"{NO_MODALITIES}: the rows hold only id, group and meta_* fields"

    def _path(self, value: str) -> Path:
        path = Path(value)
        try:
            full = (path if path.is_absolute() else self.root / path).resolve()
            if not self.allow_outside_root and not full.is_relative_to(self.root):
                raise ValueError(f"path {value!r} points outside the manifest's folder (use --allow-outside-root)")
            if not full.is_file():
                raise ValueError(f"file not found: {value}")
        except (OSError, RuntimeError) as exc:  # a name longer than the file system allows, ...; before Python
            # 3.13 resolve() reports a loop of symbolic links as a RuntimeError
            reason = "a loop of symbolic links" if isinstance(exc, RuntimeError) else exc.strerror or exc
            raise ValueError(f"path {value[:80]!r}{'…' if len(value) > 80 else ''}: {reason}") from None
        return full

    def build(self, cls: type[PairedDataset], source: Path | None) -> PairedDataset:
        modalities = list(self.kinds)
        ids = [r["id"] for r in self.rows]
        columns = {m: [r.get(m) for r in self.rows] for m in modalities}
        groups = [r["group"] for r in self.rows]
        grouping: dict[str, Any] = {"by": self.group_by or "group"}
        if not self.saw_group:  # no group column: rows sharing a text or a file are one concept
            groups, merged = merge_identical(ids, columns, self.kinds)
            grouping = {"by": AUTO_GROUPING, "merged_rows": merged}
        return cls(
            ids=ids,
            groups=groups,
            grouping=grouping,
            columns=columns,
            kinds=dict(self.kinds),
            root=self.root,
            meta={k: [r.get(k) for r in self.rows] for k in self.meta_fields},
            errors=list(self.errors),
            source=source,
        )

