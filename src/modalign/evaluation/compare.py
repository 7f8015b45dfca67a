"""Compare two models on the same rows: side-by-side retrieval metrics with paired bootstrap p-values.

Queries are paired by the dataset row that shows them (``ModalityEmbeddings.first_row``), so both
models are judged on exactly the same query items; items that failed to encode under either model
are left out of the paired test (``queries`` says how many remain).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modalign.evaluation.bootstrap import DEFAULT_BOOT, paired_bootstrap
from modalign.evaluation.evaluate import EvalResult


def _ranks_by_row(result: EvalResult, direction: str) -> dict[int, int]:
    d = result.directions[direction]
    rows = result.embeddings[d.query].first_row[d.query_items]
    return {int(r): int(k) for r, k in zip(rows, d.ranks, strict=True) if k > 0}


def compare_results(a: EvalResult, b: EvalResult, names: tuple[str, str] = ("A", "B"),
                    n_boot: int = DEFAULT_BOOT, seed: int = 0) -> dict[str, Any]:
    """The ``"compare"`` JSON block: per direction and metric, a, b, delta, CI95 of delta, p-value."""
    out: dict[str, Any] = {"models": {"a": names[0], "b": names[1]}, "n_boot": n_boot,
                           "test": "paired percentile bootstrap over queries, two-sided", "directions": {}}
    for direction in a.directions:
        if direction not in b.directions:
            continue
        ra, rb = _ranks_by_row(a, direction), _ranks_by_row(b, direction)
        common = sorted(set(ra) & set(rb))
        if not common:
            continue
        stats = paired_bootstrap(np.array([ra[r] for r in common]), np.array([rb[r] for r in common]),
                                 a.ks, n_boot=n_boot, seed=seed)
        out["directions"][direction] = {"queries": len(common), "metrics": stats}
    if not out["directions"]:
        raise ValueError("the two models share no evaluated direction with common queries")
    return out
