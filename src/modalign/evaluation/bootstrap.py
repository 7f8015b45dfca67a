"""Bootstrap over queries: 95% confidence intervals of retrieval metrics and paired p-values.

Every retrieval metric is a statistic of the per-query ranks (R@K = mean of [rank ≤ K], MRR = mean of
1/rank, median rank), so resampling queries with replacement B times gives its sampling
distribution. CIs are percentile intervals. A paired comparison resamples the *same* queries for both
models; the two-sided p-value for "no difference" is

    p = (1 + #{b : |δ*_b − δ̂| ≥ |δ̂|}) / (B + 1)

(the bootstrap distribution of δ* centred on the observed δ̂ stands in for the null distribution).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_BOOT = 1000
LEVEL = 0.95


def _valid(ranks: np.ndarray) -> np.ndarray:
    r = np.asarray(ranks)
    return r[r > 0]  # rank 0 = query without a relevant item (dropped, as in metrics_from_ranks)


def resample(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) indices of queries drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def rank_statistics(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Metric values of each row of a (B, n) (or (n,)) array of ranks, keyed like metrics_from_ranks."""
    r = np.asarray(ranks, dtype=np.float64)
    out = {f"R@{k}": np.mean(r <= k, axis=-1) for k in ks}
    out["MRR"] = np.mean(1.0 / r, axis=-1)
    out["median_rank"] = np.median(r, axis=-1)
    return out


def _interval(values: np.ndarray, level: float) -> list[float]:
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def bootstrap_ci(ranks: np.ndarray, ks: Sequence[int], n_boot: int = DEFAULT_BOOT, seed: int = 0,
                 level: float = LEVEL) -> dict[str, list[float]]:
    """{metric: [lo, hi]} percentile intervals over queries for R@K, MRR and median rank."""
    r = _valid(ranks)
    if len(r) == 0:
        return {}
    stats = rank_statistics(r[resample(len(r), n_boot, seed)], ks)
    return {name: _interval(v, level) for name, v in stats.items()}


def mean_ci(values: np.ndarray, n_boot: int = DEFAULT_BOOT, seed: int = 0, level: float = LEVEL) -> list[float]:
    """Percentile interval of the mean of per-item values (e.g. top-1 hits)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return [float("nan"), float("nan")]
    return _interval(v[resample(len(v), n_boot, seed)].mean(axis=1), level)


def paired_bootstrap(ranks_a: np.ndarray, ranks_b: np.ndarray, ks: Sequence[int], n_boot: int = DEFAULT_BOOT,
                     seed: int = 0, level: float = LEVEL) -> dict[str, dict[str, Any]]:
    """Per metric: a, b, delta = b − a, its CI and the two-sided p-value, over the same resampled queries.

    ``ranks_a[i]`` and ``ranks_b[i]`` must be the ranks of the same query under the two models.
    """
    a, b = np.asarray(ranks_a), np.asarray(ranks_b)
    if a.shape != b.shape:
        raise ValueError(f"paired ranks differ in shape: {a.shape} vs {b.shape}")
    keep = (a > 0) & (b > 0)
    a, b = a[keep], b[keep]
    if len(a) == 0:
        return {}
    idx = resample(len(a), n_boot, seed)
    observed_a, observed_b = rank_statistics(a, ks), rank_statistics(b, ks)
    boot_a, boot_b = rank_statistics(a[idx], ks), rank_statistics(b[idx], ks)
    out: dict[str, dict[str, Any]] = {}
    for name in observed_a:
        delta = float(observed_b[name] - observed_a[name])
        deltas = boot_b[name] - boot_a[name]
        extreme = int(np.sum(np.abs(deltas - delta) >= abs(delta) - 1e-12))
        out[name] = {"a": float(observed_a[name]), "b": float(observed_b[name]), "delta": delta,
                     "CI95_delta": _interval(deltas, level), "p_value": (1 + extreme) / (n_boot + 1)}
    return out
