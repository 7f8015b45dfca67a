"""Retrieval metrics with several positives per query: the rank of a query = rank of its best positive."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_KS = (1, 5, 10)


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


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """R@K (share of queries with a positive in the top K), MRR, median and mean rank."""
    r = np.asarray(ranks)
    r = r[r > 0]
    if len(r) == 0:
        return {**{f"R@{k}": float("nan") for k in ks}, "MRR": float("nan"), "median_rank": float("nan"),
                "mean_rank": float("nan"), "queries": 0}
    out: dict[str, float] = {f"R@{k}": float(np.mean(r <= k)) for k in ks}
    out["MRR"] = float(np.mean(1.0 / r))
    out["median_rank"] = float(np.median(r))
    out["mean_rank"] = float(np.mean(r))
    out["queries"] = len(r)
    return out


def retrieval_metrics(
    similarity: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, Any]:
    return metrics_from_ranks(first_positive_ranks(similarity, relevant), ks)


def modality_gap(za: np.ndarray, zb: np.ndarray) -> float:
    """‖mean(za) − mean(zb)‖ of unit-norm embeddings."""
    return float(np.linalg.norm(np.mean(za, axis=0) - np.mean(zb, axis=0)))
