"""The rank of each query's best positive: the one ranking every retrieval score here is built on.

A pure function of arrays in ``metrics`` (not ``evaluation``), so that the trainer's validation can use it
without importing a layer above it.
"""

from __future__ import annotations

import numpy as np


def first_positive_ranks(similarity: np.ndarray, relevant: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """1-based rank of the highest-scored relevant item for each query (ties count against the query).

    similarity, relevant: (Q, G). A query with no relevant item gets rank 0 (callers drop it).
    """
    sim = np.asarray(similarity, dtype=np.float64)
    rel = np.asarray(relevant, dtype=bool)
    if sim.shape != rel.shape:
        raise ValueError(f"similarity {sim.shape} and relevance {rel.shape} differ in shape")
    ranks = np.zeros(len(sim), dtype=np.int64)
    for start in range(0, len(sim), chunk):
        s, r = sim[start : start + chunk], rel[start : start + chunk]
        # a NaN score never helps its query: a NaN positive scores last, a NaN negative ranks above it
        nan = np.isnan(s)
        if nan.any():
            s = np.where(nan, np.where(r, -np.inf, np.inf), s)
        best_pos = np.where(r, s, -np.inf).max(axis=1)
        # pessimistic ties: every non-relevant item scoring >= the best positive is ranked above it
        above = ((s >= best_pos[:, None]) & ~r).sum(axis=1)
        ranks[start : start + chunk] = np.where(r.any(axis=1), above + 1, 0)
    return ranks
