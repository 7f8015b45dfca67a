"""The JSON body of a search response, assembled from bytes: the per-item part of a result is the same for
every query, so it is encoded once per item and kept; a response joins those parts with the query's
scores. Same fields, order and values as ``SearchResponse`` (schemas.py), without building one model
object per result and validating it again on the way out.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from modalign.search import Index
from modalign.search.routing import Ranked

#: rows listed per result (the rest are counted in ``n_rows``)
MAX_ROWS = 20


def item_url(item_id: str) -> str:
    return "/items/" + quote(item_id, safe="")


class ResultPayloads:
    """Per index position: the encoded fields before and after the scores of one search result."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._parts: dict[int, tuple[str, bytes, bytes]] = {}  # position → (entry id, head, tail)
        self._lock = threading.Lock()

    def parts(self, pos: int) -> tuple[bytes, bytes]:
        cat = self.index.catalog
        entry_id = cat.entry_ids[pos]
        found = self._parts.get(pos)
        if found is None or found[0] != entry_id:  # an index that changed since: encode that item again
            found = (entry_id, *self._encode(pos))
            with self._lock:
                self._parts[pos] = found
        return found[1], found[2]

    def _encode(self, pos: int) -> tuple[bytes, bytes]:
        cat = self.index.catalog
        entry_id, kind = cat.entry_ids[pos], cat.kind[pos]
        url = item_url(entry_id)
        rows = cat.rows_of(pos)
        head = orjson.dumps({"id": entry_id, "modality": cat.modality[pos], "kind": kind})[:-1]
        tail = orjson.dumps({"text": cat.caption(pos), "url": url,
                             "thumbnail": url + "/thumbnail" if kind == "image" else None,
                             "rows": rows[:MAX_ROWS], "n_rows": len(rows), "meta": cat.meta(pos)})[1:-1]
        return head, tail

    def body(self, ranked: Ranked, query: Mapping[str, Any], floors: Mapping[str, float] | None) -> bytes:
        """``{"results": [...], "query": {...}}`` for one ranking; ``floors``: the confidence floor per target
        modality for this query's modality (``confident`` is null where there is none)."""
        floors = floors or {}
        results = []
        judged = []
        for pos, modality, score, cosine in zip(ranked.ids.tolist(), ranked.modalities, ranked.scores.tolist(),
                                                ranked.cosines.tolist(), strict=True):
            head, tail = self.parts(pos)
            floor = floors.get(modality)
            confident = None if floor is None else cosine >= floor
            if confident is not None:
                judged.append(confident)
            results.append(b"".join((head, b',"score":', orjson.dumps(score), b',"cosine":', orjson.dumps(cosine),
                                     b",", tail, b',"confident":', orjson.dumps(confident), b"}")))
        about = {**query, "confidence_floor": dict(floors) or None, "confident_match": any(judged) if judged else None}
        return b"".join((b'{"results":[', b",".join(results), b'],"query":', orjson.dumps(about), b"}"))
