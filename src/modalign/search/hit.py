"""One search result (or one looked-up item) with what a user needs to show it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Hit:
    id: str
    modality: str
    kind: str
    #: the ranking score: cosine under ``raw``/``route``, the per-corpus z-score under ``calibrated``
    score: float
    cosine: float
    #: the item's text, or for images/audio the text of the first row that holds it (a caption)
    text: str | None
    #: absolute path of the source file (image/audio), None for text; it may be missing (a moved dataset)
    path: str | None
    rows: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    #: the path as the index stores it: relative to the data root (or absolute for files outside it)
    source: str | None = None

    def to_json(self, max_rows: int = 20) -> dict[str, Any]:
        return {"id": self.id, "modality": self.modality, "kind": self.kind, "score": self.score,
                "cosine": self.cosine, "text": self.text, "rows": self.rows[:max_rows], "n_rows": len(self.rows),
                "meta": self.meta}
