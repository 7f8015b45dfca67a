"""Retrieval metrics with several positives per query: the rank of a query = rank of its best positive."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import gammaln

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


def chance_metrics(relevant: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """R@K and MRR of a uniformly random ranking of the gallery, for this relevance matrix (queries × gallery).

    A query with r relevant items among N: P(hit in the top K) = 1 − C(N−r, K)/C(N, K), and the first
    relevant item sits at rank j with probability C(N−j, r−1)/C(N, r). Averaged over the queries that have
    a relevant item, like the metrics themselves.
    """
    rel = np.asarray(relevant, dtype=bool)
    counts = rel.sum(axis=1)
    counts = counts[counts > 0]
    n = rel.shape[1]
    if not len(counts):
        return {**{f"R@{k}": float("nan") for k in ks}, "MRR": float("nan")}
    values, weights = np.unique(counts, return_counts=True)
    out: dict[str, float] = {}
    for k in ks:
        per = [1.0 - _none_in_top(n, int(r), k) for r in values]
        out[f"R@{k}"] = float(np.average(per, weights=weights))
    out["MRR"] = float(np.average([_expected_reciprocal_rank(n, int(r)) for r in values], weights=weights))
    return out


def _none_in_top(n: int, r: int, k: int) -> float:
    """C(n−r, k) / C(n, k): no relevant item among the first k of a random order."""
    if k >= n - r + 1:
        return 0.0
    i = np.arange(min(k, n))
    return float(np.prod((n - r - i) / (n - i)))


def _expected_reciprocal_rank(n: int, r: int) -> float:
    """E[1/j] for the rank j of the first of r relevant items in a random order of n."""
    j = np.arange(1, n - r + 2)
    # P(first = j) = C(n−j, r−1)/C(n, r), in logs to stay in floating range
    log_p = _log_comb(n - j, r - 1) - _log_comb(np.array(n), r)
    return float(np.sum(np.exp(log_p) / j))


def _log_comb(n: np.ndarray, k: int) -> np.ndarray:
    n = np.asarray(n, dtype=np.float64)
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


def retrieval_metrics(
    similarity: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, Any]:
    return metrics_from_ranks(first_positive_ranks(similarity, relevant), ks)


def modality_gap(za: np.ndarray, zb: np.ndarray) -> float:
    """‖mean(za) − mean(zb)‖ of unit-norm embeddings."""
    return float(np.linalg.norm(np.mean(za, axis=0) - np.mean(zb, axis=0)))
