"""Modality routing and adaptive top-k (UniversalRAG-style), on per-corpus candidate lists.

* ``raw``: one ranking of every target corpus by cosine. Same-modality items usually win, because
  the modality gap makes e.g. text-text cosines larger than any text-image cosine.
* ``calibrated``: each corpus's scores are z-scored with the mean and standard deviation of *this
  query's* scores against the whole corpus, so "how exceptional is this item in its corpus" is what
  gets compared across modalities. Both moments are exact and cost O(dim²), whatever the corpus size:
  mean = q·μ, variance = qᵀΣq, with μ and Σ the corpus's mean and covariance. So they also hold for
  approximate (faiss) search, which never sees most scores.
* ``route``: only the requested corpora are searched (default: every modality but the query's own),
  ranked by cosine.

Adaptive top-k keeps the items whose ranking score is within δ of the best one, at most k.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ROUTINGS = ("calibrated", "raw", "route")
#: standard deviations below this are treated as this (a corpus of identical or one vector)
MIN_STD = 1e-4


@dataclass
class CorpusStats:
    """Mean and covariance of one corpus's unit vectors (float64)."""

    n: int
    mean: np.ndarray
    cov: np.ndarray

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, chunk: int = 65536) -> CorpusStats:
        n, dim = vectors.shape
        if n == 0:
            return cls(0, np.zeros(dim), np.zeros((dim, dim)))
        total = np.zeros(dim)
        gram = np.zeros((dim, dim))
        for start in range(0, n, chunk):
            block = np.asarray(vectors[start : start + chunk], dtype=np.float32)
            total += block.sum(axis=0, dtype=np.float64)
            gram += (block.T @ block).astype(np.float64)
        mean = total / n
        cov = gram / n - np.outer(mean, mean)
        return cls(n, mean, cov)

    def moments(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(q, dim) queries → mean and std of each query's scores against the corpus."""
        q = np.atleast_2d(np.asarray(queries, dtype=np.float64))
        mu = q @ self.mean
        var = ((q @ self.cov) * q).sum(1)  # BLAS: an unoptimised einsum over (q, d, d) costs a server ~10 %
        return mu, np.sqrt(np.maximum(var, MIN_STD**2))


def check_routing(routing: str) -> str:
    if routing not in ROUTINGS:
        raise ValueError(f"routing must be one of {list(ROUTINGS)}, got {routing!r}")
    return routing


def target_modalities(
    routing: str, available: Sequence[str], query_modality: str | None, requested: Sequence[str] | None
) -> list[str]:
    """Corpora a query goes to: the requested ones, else all (``route``: all but the query's own)."""
    check_routing(routing)
    if requested:
        unknown = [m for m in requested if m not in available]
        if unknown:
            raise ValueError(f"unknown target modality {unknown}; the index has {list(available)}")
        return list(dict.fromkeys(requested))
    if routing == "route" and query_modality is not None:
        others = [m for m in available if m != query_modality]
        return others or list(available)
    return list(available)


@dataclass
class Ranked:
    """The merged ranking of one query: global ids, their corpus, ranking score and cosine."""

    ids: np.ndarray
    modalities: list[str]
    scores: np.ndarray
    cosines: np.ndarray


def merge(
    candidates: Mapping[str, tuple[np.ndarray, np.ndarray]],
    routing: str,
    k: int,
    moments: Mapping[str, tuple[float, float]] | None = None,
    adaptive: float | None = None,
) -> Ranked:
    """Merge per-corpus (cosines, ids), each best first, into one top-k ranking."""
    parts_ids, parts_cos, parts_score, parts_mod = [], [], [], []
    for m, (cos, ids) in candidates.items():
        if len(ids) == 0:
            continue
        score = cos.astype(np.float32)
        if routing == "calibrated":
            if moments is None or m not in moments:
                raise ValueError(f"calibrated routing needs the score moments of corpus {m!r}")
            mu, sd = moments[m]
            score = ((cos - mu) / sd).astype(np.float32)
        parts_ids.append(ids)
        parts_cos.append(cos)
        parts_score.append(score)
        parts_mod.extend([m] * len(ids))
    if not parts_ids:
        return Ranked(np.zeros(0, np.int64), [], np.zeros(0, np.float32), np.zeros(0, np.float32))
    ids = np.concatenate(parts_ids)
    scores = np.concatenate(parts_score)
    cosines = np.concatenate(parts_cos)
    order = np.argsort(-scores, kind="stable")[:k]
    if adaptive is not None and len(order):
        order = order[scores[order] >= scores[order[0]] - adaptive]
    return Ranked(ids[order], [parts_mod[i] for i in order], scores[order], cosines[order].astype(np.float32))
