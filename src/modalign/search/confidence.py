"""How confident a result is, judged by the index's own pairs.

The rows of an index that hold two modalities are known matches. Used as queries, each row's item of
one modality finds its best match among every item of the other; the 5th percentile of those best
cosines is the *confidence floor* of that direction. A result below it scores lower than 95 % of the
index's own rows score at their best: it is flagged, and a query none of whose results reaches the floor
(gibberish, a concept the index does not hold) gets "no confident match" instead of confident-looking
hits. Plain cosine is compared, whatever the routing re-scores, so the floor means the same everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: the share of the index's own paired queries allowed below the floor
FLOOR_PERCENTILE = 5.0
#: paired rows used as queries at most (a seeded sample), and fewer than this give no floor
MAX_QUERIES, MIN_QUERIES = 1000, 5
#: items searched per direction at most: the queries' own partners plus a seeded sample of the others, so a
#: server over millions of items starts in seconds (its floor is then a little lenient, never stricter)
MAX_TARGETS = 50_000


def confidence_floors(index: Any, seed: int = 0) -> dict[str, dict[str, float]]:
    """``{query modality: {target modality: floor}}`` for every direction the index's rows pair; empty
    when the vectors are not held in memory (a database store)."""
    cat = index.catalog
    vectors = index._vectors
    if len(vectors) != len(cat.entry_ids):  # vectors live in an external store: no floor
        return {}
    alive = index._alive
    modality = np.asarray(cat.modality, dtype=object)
    pairs: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for row in cat.rows.values():
        items = {m: p for m, p in row["items"].items() if alive[p]}
        for a, pa in items.items():
            for b, pb in items.items():
                if a != b:
                    pairs.setdefault((a, b), []).append((pa, pb))
    rng = np.random.default_rng(seed)
    floors: dict[str, dict[str, float]] = {}
    for (a, b), found in pairs.items():
        queries = np.unique([pa for pa, _ in found])
        if len(queries) < MIN_QUERIES:
            continue
        if len(queries) > MAX_QUERIES:
            queries = np.sort(rng.choice(queries, MAX_QUERIES, replace=False))
        targets = np.flatnonzero((modality == b) & alive)
        if len(targets) > MAX_TARGETS:
            asked = set(queries.tolist())
            partners = np.unique([pb for pa, pb in found if pa in asked])
            others = np.setdiff1d(targets, partners)
            extra = rng.choice(others, max(MAX_TARGETS - len(partners), 0), replace=False)
            targets = np.union1d(partners, extra)
        best = np.empty(len(queries), np.float32)
        for start in range(0, len(queries), 256):  # 256 queries × all targets at a time: bounded memory
            block = vectors[queries[start:start + 256]] @ vectors[targets].T
            best[start:start + 256] = block.max(axis=1)
        floors.setdefault(a, {})[b] = float(np.percentile(best, FLOOR_PERCENTILE))
    return floors
