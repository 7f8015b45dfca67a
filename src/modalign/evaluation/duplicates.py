"""Duplicates in a paired dataset: the same pair under two ids, one file or vector under two ids, and one item
(identical, or nearly so in its encoder's frozen features) under several groups, which a concept-disjoint split
would leak across. One text under several ids of a group is no duplicate: that is how a group labels its rows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from modalign.data.dataset import PairedDataset
from modalign.data.union_find import UnionFind

#: cosine of two items' frozen features (unit length) from which they count as near duplicates
NEAR_DUPLICATE = 0.97


@dataclass
class DuplicateCluster:
    """Rows linked by one item: ``kind`` "pair" (both items identical), "identical" or "near" (one modality)."""

    kind: str
    modality: str
    rows: list[int]
    groups: list[str]
    cosine: float | None = None  # near: the lowest cosine of a link in the cluster

    def to_json(self, ids: Sequence[str]) -> dict[str, Any]:
        out = {"kind": self.kind, "modality": self.modality, "ids": [ids[r] for r in self.rows],
               "groups": self.groups, "crosses_groups": len(self.groups) > 1}
        if self.cosine is not None:
            out["cosine"] = round(self.cosine, 4)
        return out


def find_duplicates(dataset: PairedDataset, modalities: Sequence[str], features: Mapping[str, np.ndarray],
                    present: Mapping[str, np.ndarray], keys: Mapping[str, Sequence[Any]],
                    near: float = NEAR_DUPLICATE) -> list[DuplicateCluster]:
    """Rows holding the same pair twice, then per modality the items shown under several groups.

    ``keys[m][i]``: row i's item identity (identical items share a key); ``features[m]``: frozen features."""
    groups = dataset.groups
    out: list[DuplicateCluster] = []
    both = np.flatnonzero(np.all([present[m] for m in modalities], axis=0))
    same_pair: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for row in both:
        same_pair[tuple(keys[m][row] for m in modalities)].append(int(row))
    for rows in same_pair.values():
        if len(rows) > 1:
            out.append(DuplicateCluster("pair", "+".join(modalities), rows, _groups_of(groups, rows)))
    for m in modalities:
        out.extend(_shared_items(groups, m, features[m], np.flatnonzero(present[m]), keys[m], near,
                                 within_group=dataset.kind(m) != "text"))
    return out


def _groups_of(groups: Sequence[str], rows: Sequence[int]) -> list[str]:
    return list(dict.fromkeys(groups[r] for r in rows))


def _shared_items(groups: Sequence[str], modality: str, x: np.ndarray, rows: np.ndarray, keys: Sequence[Any],
                  near: float, within_group: bool) -> list[DuplicateCluster]:
    """Clusters of items (identical, or linked by a cosine >= ``near``) that rows of several groups show, and
    with ``within_group`` one identical item under several rows of one group."""
    item_of: dict[Any, int] = {}
    first: list[int] = []
    for r in rows:
        if keys[r] not in item_of:
            item_of[keys[r]] = len(first)
            first.append(int(r))
    union: UnionFind[int] = UnionFind(range(len(first)))
    link_cos: dict[tuple[int, int], float] = {}
    if len(first) > 1:
        z = np.ascontiguousarray(x[first], dtype=np.float32)
        z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        index = faiss.IndexFlatIP(z.shape[1])
        index.add(z)
        lims, sims, found = index.range_search(z, near)
        for i in range(len(first)):
            for s, j in zip(sims[lims[i]:lims[i + 1]], found[lims[i]:lims[i + 1]], strict=True):
                if j > i:
                    union.join(i, int(j))
                    link_cos[(i, int(j))] = float(s)
    members: dict[int, list[int]] = defaultdict(list)
    same_item: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        members[union.find(item_of[keys[r]])].append(int(r))
        same_item[item_of[keys[r]]].append(int(r))
    clusters = []
    if within_group:  # one file or vector under several ids of one group
        for item_rows in same_item.values():
            if len(item_rows) > 1 and len(_groups_of(groups, item_rows)) == 1:
                clusters.append(DuplicateCluster("identical", modality, item_rows, _groups_of(groups, item_rows)))
    for cluster_rows in members.values():
        cluster_groups = _groups_of(groups, cluster_rows)
        if len(cluster_groups) < 2:
            continue
        items = {item_of[keys[r]] for r in cluster_rows}
        links = [c for (i, j), c in link_cos.items() if i in items and j in items]
        kind = "near" if len(items) > 1 else "identical"
        clusters.append(DuplicateCluster(kind, modality, cluster_rows, cluster_groups,
                                         min(links) if kind == "near" and links else None))
    return clusters
