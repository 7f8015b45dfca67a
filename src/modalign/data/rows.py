"""What validation and the dataset both need about one row: its error record and the text limit.

Kept below ``validate`` and ``dataset`` so that the dataset can import the validator at module level
(no cycle between the two).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: longer texts are rejected rather than silently truncated by an encoder
MAX_TEXT_CHARS = 20_000


@dataclass(frozen=True)
class RowError:
    """One problem with one row: recorded (``--on-error skip``) or raised (``fail``)."""

    row: int | str
    id: str | None
    field: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"row": self.row, "id": self.id, "field": self.field, "reason": self.reason}
