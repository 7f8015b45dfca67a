"""Layer selection (STRUCTURE): score every layer pair by mutual-kNN on ≤ 5k training pairs.

Each layer's neighbour lists are computed once (not once per pair it is in), so scoring all
13 × 7 DINOv2/MiniLM pairs costs 20 kNN searches plus 91 cheap set overlaps.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np

from modalign.metrics.mutual_knn import knn_indices, rice_k

log = logging.getLogger(__name__)

MAX_PAIRS = 5000


def _mask(idx: np.ndarray, n: int) -> np.ndarray:
    mask = np.zeros((n, n), dtype=bool)
    np.put_along_axis(mask, idx, True, axis=1)
    return mask


def score_layer_pairs(
    feats_a: dict[str, np.ndarray], feats_b: dict[str, np.ndarray], k: int
) -> dict[str, float]:
    """{"la|lb": mutual-kNN} for every layer pair of two modalities over the same rows."""
    nb_a = {layer: knn_indices(x, k) for layer, x in feats_a.items()}
    nb_b = {layer: knn_indices(x, k) for layer, x in feats_b.items()}
    n = len(next(iter(nb_a.values())))
    table: dict[str, float] = {}
    for la, idx_a in nb_a.items():
        mask = _mask(idx_a, n)  # one n×n mask at a time keeps memory at n² bytes
        for lb, idx_b in nb_b.items():
            table[f"{la}|{lb}"] = float(np.mean(np.take_along_axis(mask, idx_b, axis=1).sum(axis=1) / k))
    return table


def select_layers(
    features: dict[str, dict[str, np.ndarray]],
    present: dict[str, np.ndarray],
    modalities: list[str],
    seed: int = 0,
    max_pairs: int = MAX_PAIRS,
    fixed: dict[str, str] | None = None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Best layer per modality. Two modalities: the best-scoring (i, j) pair. More: for each
    modality, the layer maximising the sum over the other modalities of its best pair score.
    ``fixed`` pins some modalities' layers (an existing space in progressive addition).

    Returns the choice and a report {"scores": {"a|b": {"la|lb": score}}, "k": k, "n": n, ...}.
    Rows are drawn with ``default_rng(seed)``, one draw per modality pair in order (the probe
    command repeats these draws to show the very same table).
    """
    fixed = dict(fixed or {})
    rng = np.random.default_rng(seed)
    report: dict[str, Any] = {"scores": {}, "method": "mutual_knn", "max_pairs": max_pairs}
    pair_best: dict[tuple[str, str], tuple[str, str, float]] = {}
    for a, b in itertools.combinations(modalities, 2):
        rows = np.flatnonzero(present[a] & present[b])
        if len(rows) < 3:
            continue
        if len(rows) > max_pairs:
            rows = np.sort(rng.choice(rows, max_pairs, replace=False))
        k = rice_k(len(rows))
        # np.asarray: a streamed CachedMatrix reads just these (≤ max_pairs) rows
        fa = {la: np.asarray(x[rows]) for la, x in features[a].items() if a not in fixed or la == fixed[a]}
        fb = {lb: np.asarray(x[rows]) for lb, x in features[b].items() if b not in fixed or lb == fixed[b]}
        table = score_layer_pairs(fa, fb, k)
        report["scores"][f"{a}|{b}"] = table
        report.setdefault("k", k)
        report.setdefault("n", len(rows))
        key, score = max(table.items(), key=lambda kv: kv[1])
        la, lb = key.split("|")
        pair_best[(a, b)] = (la, lb, score)
        report.setdefault("best", {})[f"{a}|{b}"] = {"layers": key, "score": score}
        log.info("layer selection %s|%s: best %s = %.4f (k=%d, n=%d)", a, b, key, score, k, len(rows))
    chosen: dict[str, str] = {}
    if len(modalities) == 2 and (modalities[0], modalities[1]) in pair_best:
        la, lb, _ = pair_best[(modalities[0], modalities[1])]
        chosen = {modalities[0]: la, modalities[1]: lb}
    else:
        for m in modalities:
            if m in fixed:
                chosen[m] = fixed[m]
                continue
            # score of a layer of m = sum over partner modalities of its best score with any partner layer
            totals: dict[str, float] = {}
            for (a, b) in pair_best:
                if m not in (a, b):
                    continue
                best_here: dict[str, float] = {}
                for key, score in report["scores"][f"{a}|{b}"].items():
                    la, lb = key.split("|")
                    layer = la if m == a else lb
                    best_here[layer] = max(best_here.get(layer, -1.0), score)
                for layer, score in best_here.items():
                    totals[layer] = totals.get(layer, 0.0) + score
            chosen[m] = max(totals.items(), key=lambda kv: kv[1])[0] if totals else list(features[m])[-1]
    report["chosen"] = chosen
    return chosen, report
