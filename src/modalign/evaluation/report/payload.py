"""Additive keys of the ``eval --json`` payload that the report shows: CIs and space measures.

The CLI writes the JSON from the same dict the report renders, so both show the same numbers.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from modalign.evaluation.bootstrap import DEFAULT_BOOT, bootstrap_ci
from modalign.evaluation.evaluate import EvalResult
from modalign.metrics import get_metric


def add_confidence_intervals(payload: dict[str, Any], result: EvalResult, n_boot: int = DEFAULT_BOOT,
                             seed: int = 0) -> dict[str, Any]:
    """``directions[d]["CI95"] = {"R@1": [lo, hi], ..., "MRR": ..., "median_rank": ...}`` (bootstrap over queries)."""
    for name, d in result.directions.items():
        payload["directions"][name]["CI95"] = bootstrap_ci(d.ranks, result.ks, n_boot=n_boot, seed=seed)
    payload["bootstrap"] = {"n_boot": n_boot, "seed": seed, "level": 0.95, "over": "queries",
                            "interval": "percentile"}
    return payload


def space_measures(result: EvalResult) -> dict[str, Any]:
    """Per modality pair: Wang & Isola alignment on the true pairs and each side's uniformity."""
    out: dict[str, Any] = {}
    alignment, uniformity = get_metric("alignment"), get_metric("uniformity")
    for a, b in itertools.combinations(result.embeddings, 2):
        ea, eb = result.embeddings[a], result.embeddings[b]
        both = (ea.row_to_item >= 0) & (eb.row_to_item >= 0)
        if not both.any():
            continue
        pairs = np.unique(np.stack([ea.row_to_item[both], eb.row_to_item[both]], axis=1), axis=0)
        za, zb = ea.embeddings[pairs[:, 0]], eb.embeddings[pairs[:, 1]]
        out[f"{a}|{b}"] = {
            "pairs": len(pairs),
            "alignment": alignment(za, zb),
            "uniformity": {m: uniformity(e.embeddings[np.unique(p)]) if len(np.unique(p)) > 1 else None
                           for m, e, p in ((a, ea, pairs[:, 0]), (b, eb, pairs[:, 1]))},
        }
    return out


def enrich_payload(payload: dict[str, Any], result: EvalResult, n_boot: int = DEFAULT_BOOT,
                   seed: int = 0) -> dict[str, Any]:
    add_confidence_intervals(payload, result, n_boot, seed)
    payload["space"] = space_measures(result)
    return payload
