"""Bootstrap over queries: 95% confidence intervals of retrieval metrics and paired p-values.

Every retrieval metric is a statistic of the per-query ranks (R@K = mean of [rank ≤ K], MRR = mean of
1/rank, median rank), so resampling queries with replacement B times gives its sampling
distribution. CIs are percentile intervals. A paired comparison resamples the *same* queries for both
models (δ*_b = metric_B − metric_A on resample b); the two-sided p-value for "no difference" is the
percentile-bootstrap one, consistent with the percentile CI of δ (the CI excludes 0 ⇔ p < 0.05):

    p = min(1, 2 · min( (1 + #{b : δ*_b ≤ 0}) / (B + 1), (1 + #{b : δ*_b ≥ 0}) / (B + 1) ))
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

DEFAULT_BOOT = 1000
LEVEL = 0.95


def _valid(ranks: np.ndarray) -> np.ndarray:
    r = np.asarray(ranks)
    return r[r > 0]  # rank 0 = query without a relevant item (dropped, as in metrics_from_ranks)


#: resampled indices held in memory at once (rows of B × n are drawn in chunks below this)
CHUNK_CELLS = 4_000_000


def resample_chunks(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """n_boot rows of n indices drawn with replacement, in (b, n) chunks so large query sets fit in memory."""
    rng = np.random.default_rng(seed)
    step = max(1, CHUNK_CELLS // max(1, n))
    for start in range(0, n_boot, step):
        yield rng.integers(0, n, size=(min(step, n_boot - start), n))


def _boot(ranks: Sequence[np.ndarray], ks: Sequence[int], n_boot: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Bootstrap distributions of the rank statistics of each (paired) rank array, same resamples for all."""
    parts: list[list[dict[str, np.ndarray]]] = [[] for _ in ranks]
    for idx in resample_chunks(len(ranks[0]), n_boot, seed):
        for out, r in zip(parts, ranks, strict=True):
            out.append(rank_statistics(r[idx], ks))
    return [{k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]} for chunks in parts]


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
    (stats,) = _boot([r], ks, n_boot, seed)
    return {name: _interval(v, level) for name, v in stats.items()}


def mean_ci(values: np.ndarray, n_boot: int = DEFAULT_BOOT, seed: int = 0, level: float = LEVEL) -> list[float]:
    """Percentile interval of the mean of per-item values (e.g. top-1 hits)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return [float("nan"), float("nan")]
    means = np.concatenate([v[idx].mean(axis=1) for idx in resample_chunks(len(v), n_boot, seed)])
    return _interval(means, level)


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
    observed_a, observed_b = rank_statistics(a, ks), rank_statistics(b, ks)
    boot_a, boot_b = _boot([a, b], ks, n_boot, seed)
    out: dict[str, dict[str, Any]] = {}
    for name in observed_a:
        delta = float(observed_b[name] - observed_a[name])
        deltas = boot_b[name] - boot_a[name]
        below, above = int(np.sum(deltas <= 0)), int(np.sum(deltas >= 0))
        p = min(1.0, 2.0 * (1 + min(below, above)) / (n_boot + 1))
        out[name] = {"a": float(observed_a[name]), "b": float(observed_b[name]), "delta": delta,
                     "CI95_delta": _interval(deltas, level), "p_value": p}
    return out
