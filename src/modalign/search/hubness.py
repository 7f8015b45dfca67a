"""Hubness-aware search: CSLS or inverted softmax as a re-scoring of an index's cosine candidates.

``evaluation.hubness`` re-scores a whole (queries × documents) matrix. A search has one query at a
time, so the part that depends on the other queries is computed once, at index time, per document d
and query modality Q (every live item of Q in the index stands for the queries):

* CSLS: ``2 cos(q, d) − r_D(q) − r_Q(d)``; ``r_Q(d)`` = mean cosine of d to its k nearest Q items
  (stored); ``r_D(q)`` = mean of the query's k best candidate cosines (the query's k nearest
  documents when the candidates hold them, which they do for k ≤ the candidates asked for).
* Inverted softmax: ``β cos(q, d) − log Σ_{q' ∈ Q} exp(β cos(q', d))`` (log-probability; the
  normaliser is stored).

Both are store-agnostic: the stored vectors come through ``Index.vectors`` and the candidates through
``Index.rank``. The per-document arrays are a sidecar of the index folder (``hubness.safetensors`` +
``hubness.json``) tagged with the index generation; after the index changes they are stale and must be
computed again (``modalign index --hubness``). The parameter (k or β) is the given one, or chosen by
mean MRR on a seeded half of the index's own rows that hold both modalities (items of one row are
relevant to each other), with the other half's queries scored; without such rows, the papers' value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save

from modalign._io import atomic_write_bytes
from modalign.errors import ConfigError
from modalign.evaluation.hubness import DEFAULTS, PARAMETER, Hubness, choose_parameter
from modalign.search.routing import Ranked

SIDECAR = "hubness.json"
ARRAYS = "hubness.safetensors"
#: candidates re-scored per query: k × this, at least MIN_CANDIDATES (hubs are demoted, so the true top-k
#: under the re-scoring lies among more than the top-k cosines)
OVERSAMPLE = 10
MIN_CANDIDATES = 100
CHUNK = 1024


@dataclass
class HubnessStats:
    """Per-document statistics of one hubness method, by (query modality, document modality)."""

    method: str
    value: float
    generation: int | None = None
    chosen_on: str = "given"
    grid_mrr: dict[str, float] = field(default_factory=dict)
    #: (query modality, document modality) → float32 over every index position (NaN: not a live document)
    penalty: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**Hubness(self.method, self.value).to_json(), "generation": self.generation,
                "chosen_on": self.chosen_on, "grid_MRR": self.grid_mrr,
                "pairs": [list(p) for p in self.penalty]}

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        arrays = {f"p{i}": np.ascontiguousarray(v, np.float32) for i, v in enumerate(self.penalty.values())}
        atomic_write_bytes(folder / ARRAYS, save(arrays))
        atomic_write_bytes(folder / SIDECAR, json.dumps(self.to_json(), indent=1).encode())

    @classmethod
    def load(cls, folder: str | Path) -> HubnessStats | None:
        """The folder's statistics, or None when it has none."""
        folder = Path(folder)
        if not (folder / SIDECAR).is_file():
            return None
        try:
            meta = json.loads((folder / SIDECAR).read_text(encoding="utf-8"))
            arrays = load_file(str(folder / ARRAYS))
            method = str(meta["method"])
            value = float(meta[PARAMETER[method]])
            penalty = {(str(q), str(d)): arrays[f"p{i}"] for i, (q, d) in enumerate(meta["pairs"])}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{folder / SIDECAR}: unreadable hubness statistics ({type(exc).__name__}: {exc}); "
                              "run `modalign index --hubness` again") from None
        return cls(method, value, meta.get("generation"), str(meta.get("chosen_on", "given")),
                   dict(meta.get("grid_MRR") or {}), penalty)


def index_generation(index: Any) -> int | None:
    store = getattr(index, "_store", None)
    return None if store is None else int(store.manifest.generation)


def live_positions(index: Any, modality: str) -> np.ndarray:
    alive = index.catalog.alive_mask()
    return np.flatnonzero(alive & (np.asarray(index.catalog.modality, dtype=object) == modality))


def _vectors(index: Any, positions: np.ndarray) -> np.ndarray:
    return index.vectors([index.catalog.entry_ids[p] for p in positions])


def document_penalty(docs: np.ndarray, queries: np.ndarray, method: str, value: float) -> np.ndarray:
    """``r_Q(d)`` (csls, k = value) or ``log Σ_q exp(β cos(q, d))`` (isoftmax, β = value) of every doc row."""
    out = np.empty(len(docs), np.float64)
    for start in range(0, len(docs), CHUNK):
        sim = (docs[start : start + CHUNK] @ queries.T).astype(np.float64)
        if method == "csls":
            kk = min(int(value), sim.shape[1])
            out[start : start + CHUNK] = np.partition(sim, sim.shape[1] - kk, axis=1)[:, -kk:].mean(1)
        else:
            b = value * sim
            top = b.max(1, keepdims=True)
            out[start : start + CHUNK] = top[:, 0] + np.log(np.exp(b - top).sum(1))
    return out


def _paired_rows(index: Any, qm: str, dm: str) -> list[tuple[int, int]]:
    """(query position, document position) of every live row holding both modalities."""
    cat, alive = index.catalog, index.catalog.alive_mask()
    out = []
    for row in cat.rows.values():
        items = row.get("items", {})
        if qm in items and dm in items:
            q, d = (cat.position[items[m]] if isinstance(items[m], str) else int(items[m]) for m in (qm, dm))
            if alive[q] and alive[d]:
                out.append((q, d))
    return out


def _choose(index: Any, method: str, vecs: dict[str, tuple[np.ndarray, np.ndarray]],
            seed: int) -> tuple[float, str, dict[str, float]]:
    """The parameter by mean MRR over query modalities, on a seeded half of the paired rows' queries."""
    pairs = []
    for qm in vecs:
        for dm in vecs:
            if qm == dm:
                continue
            rows = _paired_rows(index, qm, dm)
            qpos = np.unique([q for q, _ in rows])
            if len(qpos) < 4:
                continue
            half = np.sort(np.random.default_rng(seed).permutation(qpos)[: len(qpos) // 2])
            q_of = {p: i for i, p in enumerate(vecs[qm][0])}
            d_of = {p: i for i, p in enumerate(vecs[dm][0])}
            h_of = {p: i for i, p in enumerate(half)}
            rel = np.zeros((len(half), len(vecs[dm][0])), bool)
            for q, d in rows:
                if q in h_of:
                    rel[h_of[q], d_of[d]] = True
            sim = vecs[qm][1][[q_of[p] for p in half]] @ vecs[dm][1].T
            pairs.append((sim, rel))
    if not pairs:
        return DEFAULTS[method], "default (no rows pair two modalities)", {}
    best, scores = choose_parameter(method, pairs)
    return best, "a seeded half of the index's paired rows", {f"{v:g}": s for v, s in scores.items()}


def compute_stats(index: Any, method: str, value: float | str = "auto", seed: int = 0) -> HubnessStats:
    """Statistics of ``method`` for every ordered pair of the index's live modalities."""
    if method not in PARAMETER:
        raise ValueError(f"hubness must be one of none, {', '.join(sorted(PARAMETER))}; got {method!r}")
    mods = list(index.modalities)
    if len(mods) < 2:
        raise ValueError(f"hubness needs an index with two modalities; it has {mods}")
    vecs = {m: (pos, _vectors(index, pos)) for m in mods if len(pos := live_positions(index, m))}
    if value == "auto":
        chosen, chosen_on, grid = _choose(index, method, vecs, seed)
    else:
        chosen, chosen_on, grid = float(value), "given", {}
    Hubness(method, chosen)  # validates the value
    n = len(index.catalog)
    penalty = {}
    for qm, (_, q) in vecs.items():
        for dm, (dpos, d) in vecs.items():
            if qm != dm:
                arr = np.full(n, np.nan, np.float32)
                arr[dpos] = document_penalty(d, q, method, chosen)
                penalty[(qm, dm)] = arr
    return HubnessStats(method, chosen, index_generation(index), chosen_on, grid, penalty)


def check_current(stats: HubnessStats, index: Any) -> None:
    if stats.generation != index_generation(index):
        raise ConfigError(f"the index changed since its hubness statistics were computed (generation "
                          f"{stats.generation}, now {index_generation(index)}); run `modalign index --hubness "
                          f"{stats.method}` again")


def hubness_rank(index: Any, stats: HubnessStats, queries: np.ndarray, query_modality: str, k: int = 10,
                 target_modalities: Sequence[str] | None = None) -> list[Ranked]:
    """``Index.rank`` re-scored by ``stats`` for queries of ``query_modality`` (other modalities only)."""
    targets = [m for m in (target_modalities or index.modalities) if m != query_modality]
    missing = [m for m in targets if (query_modality, m) not in stats.penalty]
    if missing or not targets:
        raise ValueError(f"no hubness statistics for {query_modality} queries against {missing or targets}")
    n_cand = max(int(k) * OVERSAMPLE, MIN_CANDIDATES, int(stats.value) if stats.method == "csls" else 0)
    n_cand = min(n_cand, sum(index.counts().get(m, 0) for m in targets))
    ranked = index.rank(queries, k=max(n_cand, 1), target_modalities=targets, routing="raw",
                        query_modality=query_modality)
    out = []
    for r in ranked:
        cos = np.asarray(r.cosines, np.float64)
        mods = np.asarray(r.modalities, dtype=object)
        pen = np.empty(len(cos))
        for m in targets:
            sel = mods == m
            pen[sel] = stats.penalty[(query_modality, m)][np.asarray(r.ids)[sel]]
        if stats.method == "csls":
            kk = min(int(stats.value), len(cos))
            r_d = np.sort(cos)[-kk:].mean() if kk else 0.0
            score = 2 * cos - r_d - pen
        else:
            score = stats.value * cos - pen
        order = np.argsort(-score, kind="stable")[: int(k)]
        ids = np.asarray(r.ids)[order]
        out.append(Ranked(ids, [r.modalities[i] for i in order], score[order].astype(np.float32),
                          np.asarray(r.cosines)[order]))
    return out


def use_hubness(index: Any, stats: HubnessStats | None = None, folder: str | Path | None = None) -> HubnessStats:
    """Make ``index.search`` / ``search_embeddings`` re-score by hubness (``stats``, else the sidecar of
    ``folder``, else of the index's own folder) for queries of a known modality; bare embeddings and
    same-modality targets keep plain cosine. Returns the statistics in use. The wrapper is set on this
    index object only (the serving path calls ``search_embeddings``), so no store needs to know about it."""
    if stats is None:
        where = folder if folder is not None else getattr(getattr(index, "_store", None), "folder", None)
        stats = HubnessStats.load(where) if where is not None else None
        if stats is None:
            raise ConfigError(f"{where or 'this index'}: no hubness statistics; run `modalign index --hubness csls` "
                              "(or isoftmax) first")
    check_current(stats, index)
    plain = index.search_embeddings

    def search_embeddings(queries: np.ndarray, k: int = 10, target_modalities: Sequence[str] | None = None,
                          routing: str = "calibrated", adaptive: float | None = None,
                          query_modality: str | None = None) -> list[Any]:
        targets = [m for m in (target_modalities or index.modalities) if m != query_modality]
        if query_modality is None or not targets or any((query_modality, m) not in stats.penalty for m in targets):
            return plain(queries, k, target_modalities, routing, adaptive, query_modality)
        ranked = hubness_rank(index, stats, queries, query_modality, k, targets)
        return [[index._hit(int(p), float(s), float(c)) for p, s, c in zip(r.ids, r.scores, r.cosines, strict=True)]
                for r in ranked]

    index.search_embeddings = search_embeddings
    index.hubness = stats
    return stats
