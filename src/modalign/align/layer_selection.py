"""Layer selection (STRUCTURE): score every layer pair by mutual-kNN on ≤ 5k training pairs."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from modalign.metrics.mutual_knn import mutual_knn, rice_k

MAX_PAIRS = 5000


def select_layers(
    features: dict[str, dict[str, np.ndarray]],
    present: dict[str, np.ndarray],
    modalities: list[str],
    seed: int = 0,
    max_pairs: int = MAX_PAIRS,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Best layer per modality. Two modalities: the best-scoring (i, j) pair. More: for each
    modality, the layer maximising the sum over the other modalities of its best pair score.

    Returns the choice and a report {"scores": {"a|b": {"la|lb": score}}, "k": k, "n": n}.
    """
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
        table: dict[str, float] = {}
        best = ("", "", -1.0)
        for la, xa in features[a].items():
            for lb, xb in features[b].items():
                score = mutual_knn(xa[rows], xb[rows], k)
                table[f"{la}|{lb}"] = score
                if score > best[2]:
                    best = (la, lb, score)
        report["scores"][f"{a}|{b}"] = table
        report.setdefault("k", k)
        report.setdefault("n", len(rows))
        pair_best[(a, b)] = best
    chosen: dict[str, str] = {}
    if len(modalities) == 2 and (modalities[0], modalities[1]) in pair_best:
        la, lb, _ = pair_best[(modalities[0], modalities[1])]
        chosen = {modalities[0]: la, modalities[1]: lb}
    else:
        for m in modalities:
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
