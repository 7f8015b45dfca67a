"""``audit``: which pairs of a paired dataset disagree across modalities, scored out of fold.

Every row is scored by a model that never saw it: the rows are dealt into group folds (auto's
``group_folds``), and each fold is embedded by heads fitted on the other folds (the default fit, or a given
method). A pair's mismatch score is its CSLS margin turned around: the mean similarity of each side to its
``NEIGHBOURS`` nearest items of the other modality, minus the pair's own cosine. A caption that belongs to
another image scores high; a pair in a crowded part of the space is not penalised for the crowd.

The flag threshold is calibrated on the set itself: in each fold, pairs of rows from different groups are
swapped on purpose and scored the same way. Their scores say what a mismatch looks like on this data; the
share of real pairs that score like the worst half of them estimates how many pairs are mismatched; the
threshold is the lowest score at which the flagged rows are, by that estimate, mostly mismatches.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from modalign.align.auto import group_folds
from modalign.align.fit import encode_column, fit_arrays, resolve_encoder
from modalign.data.auto_groups import item_keys
from modalign.data.dataset import PairedDataset
from modalign.data.union_find import UnionFind
from modalign.encoders import EncoderChoice, get_encoder
from modalign.evaluation.duplicates import DuplicateCluster, find_duplicates
from modalign.features import FeatureCache

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

DEFAULT_FOLDS = 5
#: neighbours of the CSLS margin (the mean similarity to the k nearest items of the other modality)
NEIGHBOURS = 10
#: swapped pairs injected per fold to calibrate the threshold
INJECTED_PER_FOLD = 200
#: the flagged rows must be mismatches at least this often, by the calibration's estimate (which runs high:
#: measured precision in docs/audit.md)
TARGET_PRECISION = 0.7
#: quantiles of the injected swaps' scores at which the share of mismatched pairs is bounded
SHARE_QUANTILES = np.linspace(0.5, 0.95, 10)
#: below this AUROC between injected swaps and real pairs the heads cannot tell a mismatch: nothing is flagged
MIN_SEPARATION = 0.6
#: fewer rows than this cannot be cross-fitted meaningfully
MIN_ROWS = 20


@dataclass
class PairAudit:
    """One scored row: its pair's cosine, the partner's rank both ways, the item each side matched better."""

    row: int
    id: str
    group: str
    cosine: float
    rank_ab: int  # 1 = the partner is the nearest item of the other modality
    rank_ba: int
    best_b: int  # row holding the other-modality item the first side matched best (another group's)
    best_b_cosine: float
    best_a: int
    best_a_cosine: float
    mismatch: float
    flagged: bool = False

    def to_json(self, ids: Sequence[str]) -> dict[str, Any]:
        return {"row": self.row, "id": self.id, "group": self.group, "cosine": round(self.cosine, 5),
                "rank_ab": self.rank_ab, "rank_ba": self.rank_ba,
                "best_b": ids[self.best_b] if self.best_b >= 0 else None, "best_b_cosine": round(self.best_b_cosine, 5),
                "best_a": ids[self.best_a] if self.best_a >= 0 else None, "best_a_cosine": round(self.best_a_cosine, 5),
                "mismatch": round(self.mismatch, 5), "flagged": self.flagged}


@dataclass
class AuditResult:
    """Scores of every row holding both modalities, the calibration, and duplicate clusters."""

    modalities: tuple[str, str]
    ids: list[str]
    pairs: list[PairAudit]  # in row order
    injected: np.ndarray  # mismatch scores of the swaps injected for calibration
    threshold: float | None  # None: no score is mismatch-like enough to flag
    estimated_mismatched: float  # share of the scored pairs estimated to be mismatched
    separation: float = 0.5  # AUROC of injected swaps against real pairs (0.5: no better than chance)
    duplicates: list[DuplicateCluster] = field(default_factory=list)
    folds: int = DEFAULT_FOLDS
    method: str = "auto"
    seconds: float = 0.0
    unscored: int = 0  # rows lacking one of the two modalities

    @property
    def flagged(self) -> list[PairAudit]:
        return [p for p in self.ranked() if p.flagged]

    @property
    def too_weak(self) -> bool:
        """The heads cannot tell injected swaps from the real pairs: nothing is flagged."""
        return self.separation < MIN_SEPARATION

    @property
    def leaks(self) -> list[DuplicateCluster]:
        return [c for c in self.duplicates if len(c.groups) > 1]

    def ranked(self) -> list[PairAudit]:
        """Most suspicious first."""
        return sorted(self.pairs, key=lambda p: (-p.mismatch, p.row))

    def clean(self, groups: Sequence[str]) -> tuple[list[int], list[str]]:
        """(rows to keep, every row's group) for a cleaned manifest: flagged rows and the repeats of a pair that
        appears twice are dropped; the groups an item is shared by become one, named after the one that comes
        first in the data."""
        drop = {p.row for p in self.pairs if p.flagged}
        merged: UnionFind[str] = UnionFind(groups)  # a merged set keeps the name that comes first in the data
        for cluster in self.duplicates:
            if cluster.kind == "pair":
                drop.update(cluster.rows[1:])
            # only what still crosses groups once the flagged rows are gone (a swapped caption is no leak)
            shared = list(dict.fromkeys(groups[r] for r in cluster.rows if r not in drop))
            for g in shared[1:]:
                merged.join(shared[0], g)
        return [r for r in range(len(groups)) if r not in drop], [merged.find(g) for g in groups]

    def to_json(self) -> dict[str, Any]:
        a, b = self.modalities
        caught = float(np.mean(self.injected >= self.threshold)) if self.threshold is not None else 0.0
        return {
            "modalities": [a, b], "rows": len(self.ids), "scored": len(self.pairs), "unscored": self.unscored,
            "folds": self.folds, "method": self.method, "seconds": round(self.seconds, 2),
            "threshold": self.threshold, "flagged": len(self.flagged),
            "estimated_mismatched": round(self.estimated_mismatched, 4),
            "calibration": {"injected_swaps": len(self.injected), "injected_caught": round(caught, 4),
                            "separation": round(self.separation, 4),
                            "target_precision": TARGET_PRECISION, "neighbours": NEIGHBOURS},
            "pairs": [p.to_json(self.ids) for p in self.ranked()],
            "duplicates": [c.to_json(self.ids) for c in self.duplicates],
            "leaks": len(self.leaks),
        }


def separation(scores: np.ndarray, injected: np.ndarray) -> float:
    """AUROC of telling the injected swaps from the real pairs by score (0.5: the heads cannot tell them apart)."""
    if not len(scores) or not len(injected):
        return 0.5
    ranks = rankdata(np.concatenate([scores, injected]))
    return float((ranks[len(scores):].sum() - len(injected) * (len(injected) + 1) / 2) / (len(scores) * len(injected)))


def calibrated_threshold(scores: np.ndarray, injected: np.ndarray,
                         target_precision: float = TARGET_PRECISION) -> tuple[float | None, float]:
    """(threshold, estimated share of mismatched pairs) from the real scores and the injected swaps' scores.

    Real mismatches score like injected ones, so above any score t there are at least share × (injected share
    above t) of the real pairs: the share is the smallest ratio of the two over t from the injected median up
    (clean pairs only raise the ratio). With that many mismatches, the rows above t hold an expected number of
    them; the threshold is the lowest t where they make ``target_precision`` of those rows. No threshold when
    the heads cannot tell injected swaps from the real pairs (``MIN_SEPARATION``).
    """
    if not len(scores) or not len(injected) or separation(scores, injected) < MIN_SEPARATION:
        return None, 0.0
    swaps = np.sort(injected)
    ratios = [np.mean(scores > np.quantile(swaps, q)) / (1 - q) for q in SHARE_QUANTILES]
    share = float(min(1.0, *ratios))
    order = np.sort(scores)[::-1]
    swaps_above = 1 - np.searchsorted(swaps, order, side="left") / len(swaps)
    precision = share * len(scores) * swaps_above / np.arange(1, len(scores) + 1)
    ok = np.flatnonzero(precision >= target_precision)
    return (float(order[ok.max()]), share) if len(ok) else (None, share)


def _unit(z: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(z, dim=1).numpy()


def _distinct_items(keys: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(one row per distinct item, each row's item index)."""
    index: dict[Any, int] = {}
    item = np.array([index.setdefault(k, len(index)) for k in keys], dtype=np.int64)
    first = np.zeros(len(index), dtype=np.int64)
    first[item[::-1]] = np.arange(len(item))[::-1]
    return first, item


def score_pairs(xa: np.ndarray, xb: np.ndarray, groups: Sequence[str], keys_a: Sequence[Any],
                keys_b: Sequence[Any], *, folds: int = DEFAULT_FOLDS, method: str = "auto", dim: int = 256,
                seed: int = 0, progress: Progress | None = None) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Out-of-fold scores of rows (xa[i], xb[i]) and the scores of injected swaps.

    ``keys_*`` identify items (rows holding an identical item share a key): an item is one candidate, and a
    row's own item never competes with it. Returns one dict per row (the ``PairAudit`` fields but row/id)."""
    n = len(xa)
    groups_arr = np.asarray(groups, dtype=object)
    group_id = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    gid = np.array([group_id[g] for g in groups], dtype=np.int64)
    first_a, item_a = _distinct_items(keys_a)
    first_b, item_b = _distinct_items(keys_b)
    rng = np.random.default_rng(seed + 1)
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    injected: list[np.ndarray] = []
    fold_rows = group_folds(gid, folds, seed=seed)
    for f, rows in enumerate(fold_rows):
        if progress is not None:
            progress("cross-fit", f, len(fold_rows))
        train = np.setdiff1d(np.arange(n), rows)
        ones = np.ones(len(train), dtype=bool)
        fitted = fit_arrays({"a": {"x": xa[train]}, "b": {"x": xb[train]}}, {"a": ones, "b": ones},
                            list(groups_arr[train]), ["a", "b"], default_layers={"a": "x", "b": "x"},
                            method=method, dim=dim, val_fraction=0.0)
        with torch.no_grad():
            za = _unit(fitted.heads["a"](torch.as_tensor(xa[first_a], dtype=torch.float32)))
            zb = _unit(fitted.heads["b"](torch.as_tensor(xb[first_b], dtype=torch.float32)))
        qa, qb = za[item_a[rows]], zb[item_b[rows]]
        sim_ab, sim_ba = qa @ zb.T, qb @ za.T  # each fold row against every distinct item
        k = min(NEIGHBOURS, sim_ab.shape[1], sim_ba.shape[1])
        crowd_a = np.sort(sim_ab, axis=1)[:, -k:].mean(1)
        crowd_b = np.sort(sim_ba, axis=1)[:, -k:].mean(1)
        own = np.sum(qa * qb, axis=1)
        # competitors: items of other groups (an item also shown by the row's own group is no rival)
        rival_b = _rival_mask(item_b, gid, rows, len(first_b))
        rival_a = _rival_mask(item_a, gid, rows, len(first_a))
        best_b = np.where(rival_b, sim_ab, -np.inf).argmax(1)
        best_a = np.where(rival_a, sim_ba, -np.inf).argmax(1)
        for j, row in enumerate(rows):
            out[row] = {
                "cosine": float(own[j]),
                "rank_ab": int(np.sum(sim_ab[j] > own[j]) + 1), "rank_ba": int(np.sum(sim_ba[j] > own[j]) + 1),
                "best_b": int(first_b[best_b[j]]) if rival_b[j].any() else -1,
                "best_b_cosine": float(sim_ab[j, best_b[j]]) if rival_b[j].any() else float("nan"),
                "best_a": int(first_a[best_a[j]]) if rival_a[j].any() else -1,
                "best_a_cosine": float(sim_ba[j, best_a[j]]) if rival_a[j].any() else float("nan"),
                "mismatch": float(crowd_a[j] + crowd_b[j] - 2 * own[j]),
            }
        injected.append(_injected_swaps(rng, rows, gid, item_b, qa, qb, crowd_a, crowd_b))
    if progress is not None:
        progress("cross-fit", len(fold_rows), len(fold_rows))
    return out, np.concatenate(injected) if injected else np.zeros(0)


def _rival_mask(item: np.ndarray, gid: np.ndarray, rows: np.ndarray, n_items: int) -> np.ndarray:
    """(len(rows), n_items): True where the item is shown by no row of the query row's group."""
    n_groups = int(gid.max()) + 1
    shown = np.zeros((n_groups, n_items), dtype=bool)
    shown[gid, item] = True
    return ~shown[gid[rows]]


def _injected_swaps(rng: np.random.Generator, rows: np.ndarray, gid: np.ndarray, item_b: np.ndarray,
                    qa: np.ndarray, qb: np.ndarray, crowd_a: np.ndarray, crowd_b: np.ndarray) -> np.ndarray:
    """Mismatch scores of fold rows' first sides paired with other fold rows' second sides (other groups)."""
    m = min(INJECTED_PER_FOLD, len(rows) // 2)
    i, j = rng.choice(len(rows), m, replace=False), rng.choice(len(rows), m, replace=False)
    ok = (gid[rows[i]] != gid[rows[j]]) & (item_b[rows[i]] != item_b[rows[j]])
    i, j = i[ok], j[ok]
    return crowd_a[i] + crowd_b[j] - 2 * np.sum(qa[i] * qb[j], axis=1)


def audit(dataset: PairedDataset, modalities: Sequence[str], *, encoders: Mapping[str, EncoderChoice] | None = None,
          cache: FeatureCache | None = None, method: str = "auto", folds: int = DEFAULT_FOLDS, dim: int = 256,
          seed: int = 0, near_duplicate: float | None = None, progress: Progress | None = None) -> AuditResult:
    """Score every pair of ``modalities`` (two) out of fold, flag the mismatched ones and find duplicates.

    ``encoders`` as ``fit`` takes them (default by kind); ``method`` fits the heads of each fold (``auto``:
    the default fit); ``near_duplicate``: the cosine of frozen features from which two items count as near
    duplicates (default ``duplicates.NEAR_DUPLICATE``)."""
    t0 = time.perf_counter()
    mods = list(modalities)
    if len(mods) != 2 or len(set(mods)) != 2:
        raise ValueError(f"audit compares two modalities, got {mods}")
    for m in mods:
        if m not in dataset.columns:
            raise ValueError(f"modality {m!r} is not in the data; it has {dataset.modalities}")
    cache = cache if cache is not None else FeatureCache()
    encoders = dict(encoders or {})
    feats: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    for m in mods:
        name, cfg = resolve_encoder(dataset, m, encoders.get(m))
        enc = get_encoder(name, **cfg)
        columns, present[m], _ = encode_column(dataset, m, enc, cache, [enc.default_layer], progress)
        feats[m] = np.asarray(columns[enc.default_layer], dtype=np.float32)
    both = np.flatnonzero(present[mods[0]] & present[mods[1]])
    n_groups = len({dataset.groups[i] for i in both})
    if len(both) < MIN_ROWS or n_groups < folds:
        raise ValueError(f"{len(both)} rows in {n_groups} group(s) hold both {mods[0]!r} and {mods[1]!r}: an "
                         f"audit needs at least {MIN_ROWS} rows in {folds} groups (one per fold)")
    keys = {m: _keys(dataset, m) for m in mods}
    groups = [dataset.groups[i] for i in both]
    scored, injected = score_pairs(feats[mods[0]][both], feats[mods[1]][both], groups,
                                   [keys[mods[0]][i] for i in both], [keys[mods[1]][i] for i in both],
                                   folds=folds, method=method, dim=dim, seed=seed, progress=progress)
    scores = np.array([s["mismatch"] for s in scored])
    threshold, share = calibrated_threshold(scores, injected)
    pairs = []
    for local, row in enumerate(both):
        s = dict(scored[local])
        s["best_b"] = int(both[s["best_b"]]) if s["best_b"] >= 0 else -1
        s["best_a"] = int(both[s["best_a"]]) if s["best_a"] >= 0 else -1
        pairs.append(PairAudit(row=int(row), id=dataset.ids[row], group=dataset.groups[row],
                               flagged=threshold is not None and s["mismatch"] >= threshold, **s))
    duplicates = find_duplicates(dataset, mods, {m: feats[m] for m in mods}, present, keys,
                                 **({"near": near_duplicate} if near_duplicate is not None else {}))
    log.info("audit: %d pairs scored, %d flagged, %d duplicate clusters", len(pairs),
             sum(p.flagged for p in pairs), len(duplicates))
    return AuditResult(modalities=(mods[0], mods[1]), ids=list(dataset.ids), pairs=pairs, injected=injected,
                       threshold=threshold, estimated_mismatched=share, separation=separation(scores, injected),
                       duplicates=duplicates, folds=folds,
                       method=method, seconds=time.perf_counter() - t0, unscored=len(dataset) - len(both))


def _keys(dataset: PairedDataset, modality: str) -> list[Any]:
    """Each row's item key: identical texts (normalised), files and vectors share one."""
    column = dataset.columns[modality]
    keys: list[Any] = [("vector", hashlib.blake2b(np.asarray(v, dtype=np.float32).tobytes(), digest_size=16).digest())
                       if isinstance(v, np.ndarray) else ("row", i) for i, v in enumerate(column)]
    for row, key in item_keys({modality: column}, {modality: dataset.kind(modality)}, files="all"):
        keys[row] = key
    return keys
