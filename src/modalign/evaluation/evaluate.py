"""Evaluate an aligned space on a dataset: cross-modal retrieval both ways + modality gap.

Items are de-duplicated by content before ranking (four rows sharing the text "fox" give one
text query whose four images are all relevant); an item is relevant to a query when the two
occur together in at least one row. A pair of modalities that no row holds together (images from
one source, speech from another, as after progressive addition) is matched by ``group`` instead:
an item is relevant when it shares the query's concept.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modalign.align.model import AlignedModel
from modalign.data.dataset import PairedDataset
from modalign.evaluation.hubness import Hubness
from modalign.evaluation.retrieval import (
    DEFAULT_KS,
    chance_metrics,
    first_positive_ranks,
    metrics_from_ranks,
    modality_gap,
)
from modalign.features import FeatureCache, extract, item_key

Progress = Callable[[str, int, int], None]


@dataclass
class ModalityEmbeddings:
    """Unique items of one modality in the evaluated rows and their embeddings."""

    modality: str
    row_to_item: np.ndarray  # int (n_rows,), -1 where the row lacks the modality (or it failed)
    first_row: np.ndarray  # a row index showing each unique item (for ids, thumbnails, texts)
    embeddings: np.ndarray  # (n_items, dim)


@dataclass
class DirectionResult:
    query: str
    target: str
    metrics: dict[str, Any]
    ranks: np.ndarray  # rank of the best positive for each query item
    query_items: np.ndarray  # unique-item indices of the queries (into ModalityEmbeddings)
    gallery_items: np.ndarray
    similarity: np.ndarray  # (n_queries, n_gallery): the scores ranked (cosine, or its hubness re-scoring)
    relevant: np.ndarray  # bool, same shape
    #: with a hubness re-scoring: the plain cosine metrics of the same queries, to compare like with like
    cosine_metrics: dict[str, Any] | None = None


@dataclass
class EvalResult:
    n: int
    directions: dict[str, DirectionResult]
    embeddings: dict[str, ModalityEmbeddings]
    gaps: dict[str, float]
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (row id, modality, reason)
    #: modality pairs ("a|b") that no row holds together, so positives were matched by group
    by_group: list[str] = field(default_factory=list)
    ks: tuple[int, ...] = DEFAULT_KS

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": self.n,
            "directions": {name: d.metrics for name, d in self.directions.items()},
            "modality_gap": next(iter(self.gaps.values())) if self.gaps else float("nan"),
        }
        if len(self.gaps) > 1:
            out["modality_gaps"] = dict(self.gaps)
        if self.by_group:
            out["matched_by_group"] = list(self.by_group)
        out["skipped"] = len(self.errors)
        return out


def embed_unique(
    model: AlignedModel,
    dataset: PairedDataset,
    modality: str,
    cache: FeatureCache | None,
    progress: Progress | None = None,
) -> tuple[ModalityEmbeddings, list[tuple[str, str, str]]]:
    present = np.flatnonzero(dataset.present(modality))
    items = dataset.items(modality, present)
    keys = [item_key(it) for it in items]
    unique: dict[bytes, int] = {}
    row_to_item = np.full(len(dataset), -1, dtype=np.int64)
    first_row: list[int] = []
    for row, key in zip(present, keys, strict=True):
        if key not in unique:
            unique[key] = len(unique)
            first_row.append(int(row))
        row_to_item[row] = unique[key]
    branch = model.branch(modality)
    total = len(first_row)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(f"encode {modality}", min(done[0], total), total)

    res = extract(model.encoder_for(modality), [dataset.columns[modality][r] for r in first_row], cache,
                  layers=[branch.layer], progress=tick, on_error="skip")
    errors = [(dataset.ids[first_row[i]], modality, reason) for i, reason in res.errors]
    emb = np.zeros((total, model.dim), np.float32)
    emb[res.ok] = model.embed_features(modality, res.features[branch.layer])
    if not res.ok.all():  # rows whose item failed lose the modality
        bad = np.flatnonzero(~res.ok)
        row_to_item[np.isin(row_to_item, bad)] = -1
    return ModalityEmbeddings(modality, row_to_item, np.asarray(first_row), emb), errors


def evaluate_detailed(
    model: AlignedModel,
    dataset: PairedDataset,
    cache: FeatureCache | None = None,
    modalities: Sequence[str] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    progress: Progress | None = None,
    hubness: Hubness | None = None,
) -> EvalResult:
    """Retrieval both ways between every pair of ``modalities``; ``hubness`` re-scores each direction's
    cosine matrix (CSLS, inverted softmax) before ranking."""
    mods = list(modalities) if modalities else [m for m in model.modalities if m in dataset.columns]
    if len(mods) < 2:
        raise ValueError(f"need two modalities present in both model ({model.modalities}) "
                         f"and data ({dataset.modalities})")
    cache = cache if cache is not None else FeatureCache()
    embs: dict[str, ModalityEmbeddings] = {}
    errors: list[tuple[str, str, str]] = []
    for m in mods:
        embs[m], errs = embed_unique(model, dataset, m, cache, progress)
        errors.extend(errs)
    directions: dict[str, DirectionResult] = {}
    gaps: dict[str, float] = {}
    covered = np.zeros(len(dataset), dtype=bool)
    by_group: list[str] = []
    groups = np.asarray(dataset.groups, dtype=object)
    for a, b in itertools.combinations(mods, 2):
        ra, rb = embs[a].row_to_item, embs[b].row_to_item
        rows = np.flatnonzero((ra >= 0) & (rb >= 0))
        if len(rows):
            qa, gb = np.unique(ra[rows]), np.unique(rb[rows])
            pos_a = {item: i for i, item in enumerate(qa)}
            pos_b = {item: i for i, item in enumerate(gb)}
            rel = np.zeros((len(qa), len(gb)), dtype=bool)
            rel[[pos_a[i] for i in ra[rows]], [pos_b[i] for i in rb[rows]]] = True
        else:
            matched = _group_relevance(ra, rb, groups)
            if matched is None:
                continue
            rows, qa, gb, rel = matched
            by_group.append(f"{a}|{b}")
        covered[rows] = True
        za, zb = embs[a].embeddings[qa], embs[b].embeddings[gb]
        sim = za @ zb.T
        for q, t, s, r, qi, gi in ((a, b, sim, rel, qa, gb), (b, a, sim.T, rel.T, gb, qa)):
            cosine = None
            if hubness is not None:  # per direction: inverted softmax normalises over that direction's queries
                cosine = metrics_from_ranks(first_positive_ranks(s, r), ks)
                s = hubness.apply(s)
            ranks = first_positive_ranks(s, r)
            metrics = {**metrics_from_ranks(ranks, ks), "chance": chance_metrics(r, ks)}
            directions[f"{q}->{t}"] = DirectionResult(q, t, metrics, ranks, qi, gi, s, r, cosine_metrics=cosine)
        gaps[f"{a}|{b}"] = modality_gap(za, zb)
    return EvalResult(n=int(covered.sum()), directions=directions, embeddings=embs, gaps=gaps, errors=errors,
                      ks=tuple(ks), by_group=by_group)


def _group_relevance(
    ra: np.ndarray, rb: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Rows, query items, gallery items and relevance of two modalities held by different rows.

    Only concepts that both modalities show count (a query without any positive is no test); an
    item seen under several groups is relevant to every one of them.
    """
    shared = set(groups[ra >= 0]) & set(groups[rb >= 0])
    if not shared:
        return None
    in_shared = np.isin(groups, list(shared))
    rows_a, rows_b = np.flatnonzero((ra >= 0) & in_shared), np.flatnonzero((rb >= 0) & in_shared)
    qa, gb = np.unique(ra[rows_a]), np.unique(rb[rows_b])
    gid = {g: i for i, g in enumerate(sorted(shared, key=str))}
    item_groups_a = np.zeros((len(qa), len(gid)), dtype=bool)
    item_groups_b = np.zeros((len(gb), len(gid)), dtype=bool)
    item_groups_a[np.searchsorted(qa, ra[rows_a]), [gid[g] for g in groups[rows_a]]] = True
    item_groups_b[np.searchsorted(gb, rb[rows_b]), [gid[g] for g in groups[rows_b]]] = True
    rel = (item_groups_a.astype(np.int32) @ item_groups_b.T.astype(np.int32)) > 0
    return np.union1d(rows_a, rows_b), qa, gb, rel


def evaluate(model: AlignedModel, dataset: PairedDataset, cache: FeatureCache | None = None,
             **kwargs: Any) -> dict[str, Any]:
    """The ``eval --json`` dictionary (its keys: docs/architecture.md, "Contracts")."""
    return evaluate_detailed(model, dataset, cache, **kwargs).to_json()
