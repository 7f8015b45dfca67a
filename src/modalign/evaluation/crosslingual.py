"""Cross-lingual evaluation: retrieval per language pair and the mean rank variance (MRV).

Every text modality of the model (``text``, ``text_es``, ``text_kjv`` ...) counts as a language. For a
*pivot* modality P (an image, or one of the languages) and the other languages S (at least two):

- per-language retrieval: L → P and P → L for each L in S, all on the same rows (those that have P and
  every language of S), so the languages are compared on one gallery;
- MRV (1-to-K, docs/architecture.md): for each instance, the variance across the languages of S of the rank of the
  correct item, averaged over instances. ``to``: a query in language L retrieves P (an instance = the
  tuple of the row's query texts, so four images of one emoji sharing their names count once);
  ``from``: an item of P retrieves the L gallery (an instance = one unique P item). 0 = every language
  ranks every instance alike; consistency, not accuracy: a model that is equally bad everywhere has
  MRV 0 too, so read it next to R@1.

Ranks reuse the embeddings ``evaluate_detailed`` already computed; nothing is re-encoded.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modalign.evaluation.evaluate import EvalResult, ModalityEmbeddings
from modalign.evaluation.retrieval import DEFAULT_KS, first_positive_ranks, metrics_from_ranks


def mean_rank_variance(ranks: np.ndarray) -> float:
    """(n_instances, n_languages) ranks → mean over instances of the population variance across languages."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] < 2:
        raise ValueError(f"MRV needs ranks of shape (instances, >=2 languages), got {r.shape}")
    if len(r) == 0:
        return float("nan")
    return float(np.mean(np.var(r, axis=1)))


def _relevance(rows: np.ndarray, q_map: np.ndarray, g_map: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique query items, unique gallery items and the (Q, G) matrix of items sharing a row."""
    q_items, q_pos = np.unique(q_map[rows], return_inverse=True)
    g_items, g_pos = np.unique(g_map[rows], return_inverse=True)
    rel = np.zeros((len(q_items), len(g_items)), dtype=bool)
    rel[q_pos, g_pos] = True
    return q_items, g_items, rel


def pivot_ranks(
    embeddings: Mapping[str, ModalityEmbeddings], languages: Sequence[str], pivot: str
) -> dict[str, Any]:
    """Ranks of every language against ``pivot`` on the rows that have all of them.

    Returns ``rows`` (row indices used), ``to`` (n_instances, n_languages) ranks of L → pivot queries,
    ``from`` (n_pivot_items, n_languages) ranks of pivot → L queries, and the per-language rank vectors
    (``to_by_language``/``from_by_language``, one entry per unique query) for retrieval metrics.
    """
    langs = list(languages)
    if len(langs) < 2 or pivot in langs:
        raise ValueError(f"need >= 2 languages other than the pivot {pivot!r}, got {langs}")
    maps = {m: embeddings[m].row_to_item for m in [*langs, pivot]}
    rows = np.flatnonzero(np.all([maps[m] >= 0 for m in maps], axis=0))
    to_cols, from_cols = [], []
    to_by_lang: dict[str, np.ndarray] = {}
    from_by_lang: dict[str, np.ndarray] = {}
    for lang in langs:
        # L → pivot: the rank of each unique L query, then looked up per row
        q_items, g_items, rel = _relevance(rows, maps[lang], maps[pivot])
        sim = embeddings[lang].embeddings[q_items] @ embeddings[pivot].embeddings[g_items].T
        ranks = first_positive_ranks(sim, rel)
        to_by_lang[lang] = ranks
        to_cols.append(ranks[np.searchsorted(q_items, maps[lang][rows])])
        # pivot → L: each unique pivot item searches the L gallery
        p_items, l_items, rel_p = _relevance(rows, maps[pivot], maps[lang])
        sim_p = embeddings[pivot].embeddings[p_items] @ embeddings[lang].embeddings[l_items].T
        ranks_p = first_positive_ranks(sim_p, rel_p)
        from_by_lang[lang] = ranks_p
        from_cols.append(ranks_p)  # p_items is the same sorted pivot list for every language
    if len(rows):
        # one instance per distinct tuple of query texts (duplicate rows would weigh an instance twice)
        keys = np.stack([maps[lang][rows] for lang in langs], axis=1)
        _, first = np.unique(keys, axis=0, return_index=True)
        to = np.stack(to_cols, axis=1)[np.sort(first)]
    else:
        to = np.zeros((0, len(langs)), np.int64)
    frm = np.stack(from_cols, axis=1) if len(rows) else np.zeros((0, len(langs)), np.int64)
    return {"rows": rows, "to": to, "from": frm, "to_by_language": to_by_lang, "from_by_language": from_by_lang}


def text_languages(kinds: Mapping[str, str]) -> list[str]:
    """Modalities of kind text, in the model's order."""
    return [m for m, kind in kinds.items() if kind == "text"]


def crosslingual_report(
    result: EvalResult, kinds: Mapping[str, str], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, Any] | None:
    """The ``"crosslingual"`` block of ``eval --json``; None when fewer than two languages were evaluated.

    ``kinds``: modality → kind (text/image/...) of the evaluated modalities.
    """
    evaluated = {m: k for m, k in kinds.items() if m in result.embeddings}
    languages = text_languages(evaluated)
    if len(languages) < 2:
        return None
    pairs: dict[str, dict[str, Any]] = {}
    for a, b in itertools.combinations(languages, 2):
        for q, t in ((a, b), (b, a)):
            d = result.directions.get(f"{q}->{t}")
            if d is not None:
                pairs[f"{q}->{t}"] = d.metrics
    pivots: dict[str, Any] = {}
    for pivot in evaluated:
        others = [lang for lang in languages if lang != pivot]
        if len(others) < 2:
            continue
        pr = pivot_ranks(result.embeddings, others, pivot)
        pivots[pivot] = {
            "languages": others,
            "n_rows": len(pr["rows"]),
            "MRV_to": mean_rank_variance(pr["to"]) if len(pr["to"]) else float("nan"),
            "MRV_from": mean_rank_variance(pr["from"]) if len(pr["from"]) else float("nan"),
            "instances_to": len(pr["to"]),
            "instances_from": len(pr["from"]),
            "to": {lang: metrics_from_ranks(pr["to_by_language"][lang], ks) for lang in others},
            "from": {lang: metrics_from_ranks(pr["from_by_language"][lang], ks) for lang in others},
        }
    non_text = [p for p in pivots if evaluated[p] != "text"]
    headline = [pivots[p]["MRV_to"] for p in (non_text or list(pivots)) if not np.isnan(pivots[p]["MRV_to"])]
    return {
        "languages": languages,
        "pairs": pairs,
        "pivots": pivots,
        # one number to quote: the L → pivot MRV, over non-text pivots when there are any (images)
        "MRV": float(np.mean(headline)) if headline else None,
    }
