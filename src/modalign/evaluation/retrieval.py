"""Retrieval metrics with several positives per query: the rank of a query = rank of its best positive."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modalign.metrics.ranks import first_positive_ranks  # it lives in metrics: the trainer uses it too

DEFAULT_KS = (1, 5, 10)


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
