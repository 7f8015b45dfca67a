"""Hubness-aware re-scoring of a (queries × documents) cosine similarity matrix.

In high dimension a few documents ("hubs") are near many queries and crowd the top of every list.
Both methods here penalise them, as pure functions of the similarity matrix:

* CSLS (Conneau et al. 2018, "Word translation without parallel data"):
  ``csls(q, d) = 2 cos(q, d) − r_D(q) − r_Q(d)``, with ``r_D(q)`` the mean cosine of q to its k
  nearest documents and ``r_Q(d)`` the mean cosine of d to its k nearest queries.
* Inverted softmax (Smith et al. 2017, "Offline bilingual word vectors, orthogonal transformations
  and the inverted softmax"): ``P(q | d) = exp(β cos(q, d)) / Σ_q' exp(β cos(q', d))``, the
  softmax over the *queries* of each document, so a document near everything gets little mass per query.

Work is done ``chunk`` rows or columns at a time: besides the input and the output, memory stays
O(chunk × n). A non-finite similarity is treated as missing: it is left out of the neighbour means
and normalisers and is NaN in the output, which ``first_positive_ranks`` scores against its query
(a NaN positive ranks last, a NaN negative above every positive), so a NaN never helps a query.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from modalign.evaluation.retrieval import first_positive_ranks

METHODS = ("none", "csls", "isoftmax")
#: the parameter each method takes, by its name in the JSON and on the command line
PARAMETER = {"csls": "k", "isoftmax": "beta"}
#: grids searched when the parameter is "auto" (k = 10 and β ≈ 30 are the papers' settings)
GRIDS: dict[str, tuple[float, ...]] = {
    "csls": (1, 2, 3, 5, 10, 20, 50),
    "isoftmax": (1.0, 3.0, 10.0, 20.0, 30.0, 50.0, 100.0),
}
#: the papers' settings; among grid values that score the same, the one nearest to these wins
DEFAULTS = {"csls": 10.0, "isoftmax": 30.0}
DEFAULT_CHUNK = 1024


def _out_dtype(sim: np.ndarray) -> np.dtype:
    # float32 input stays float32 (an n × n float64 copy would double the peak memory)
    return np.promote_types(sim.dtype, np.float32)


def _topk_mean_rows(block: np.ndarray, k: int) -> np.ndarray:
    """Mean of the k largest finite values of each row (fewer when a row has fewer; NaN when none)."""
    finite = np.isfinite(block)
    vals = np.where(finite, block, -np.inf)
    kk = min(k, block.shape[1])
    top = np.partition(vals, block.shape[1] - kk, axis=1)[:, -kk:] if kk else vals[:, :0]
    ok = np.isfinite(top)
    count = ok.sum(axis=1)
    total = np.where(ok, top, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def knn_mean(sim: np.ndarray, k: int, axis: int = 1, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """Mean similarity of each row (``axis=1``) or column (``axis=0``) to its k nearest, non-finite left out."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if axis not in (0, 1):
        raise ValueError(f"axis must be 0 or 1, got {axis}")
    s = np.asarray(sim)
    n = s.shape[0] if axis == 1 else s.shape[1]
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, chunk):
        block = s[start : start + chunk] if axis == 1 else s[:, start : start + chunk].T
        out[start : start + chunk] = _topk_mean_rows(np.asarray(block, dtype=np.float64), k)
    return out


def csls(sim: np.ndarray, k: int = 10, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """``2 cos(q, d) − r_D(q) − r_Q(d)`` for every query row q and document column d."""
    s = np.asarray(sim)
    if s.ndim != 2:
        raise ValueError(f"similarity must be 2-D, got shape {s.shape}")
    r_d = knn_mean(s, k, axis=1, chunk=chunk)  # each query's k nearest documents
    r_q = knn_mean(s, k, axis=0, chunk=chunk)  # each document's k nearest queries
    out = np.empty(s.shape, dtype=_out_dtype(s))
    for start in range(0, s.shape[0], chunk):
        block = np.asarray(s[start : start + chunk], dtype=np.float64)
        scored = 2.0 * block - r_d[start : start + chunk, None] - r_q[None, :]
        out[start : start + chunk] = np.where(np.isfinite(block), scored, np.nan)
    return out


def column_log_normaliser(sim: np.ndarray, beta: float, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """``log Σ_q exp(β sim[q, d])`` of each document column over its finite entries (NaN when none)."""
    s = np.asarray(sim)
    out = np.empty(s.shape[1], dtype=np.float64)
    for start in range(0, s.shape[1], chunk):
        block = beta * np.asarray(s[:, start : start + chunk], dtype=np.float64)
        finite = np.isfinite(block)
        vals = np.where(finite, block, -np.inf)
        top = vals.max(axis=0, initial=-np.inf)
        safe = np.where(np.isfinite(top), top, 0.0)  # max-shift: exp never overflows
        total = np.where(finite, np.exp(vals - safe), 0.0).sum(axis=0)
        out[start : start + chunk] = np.where(finite.any(axis=0), safe + np.log(np.maximum(total, 1e-300)), np.nan)
    return out


def inverted_softmax(sim: np.ndarray, beta: float = 30.0, chunk: int = DEFAULT_CHUNK, log: bool = False) -> np.ndarray:
    """``exp(β sim[q, d]) / Σ_q' exp(β sim[q', d])``: each document column normalised over the queries.

    ``log=True`` returns the log-probabilities, which rank the same and do not underflow to ties
    at large β or many queries (the form used for ranking).
    """
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    s = np.asarray(sim)
    if s.ndim != 2:
        raise ValueError(f"similarity must be 2-D, got shape {s.shape}")
    lse = column_log_normaliser(s, beta, chunk)
    out = np.empty(s.shape, dtype=_out_dtype(s))
    for start in range(0, s.shape[0], chunk):
        block = np.asarray(s[start : start + chunk], dtype=np.float64)
        logp = beta * block - lse[None, :]
        logp = np.where(np.isfinite(block), logp, np.nan)
        out[start : start + chunk] = logp if log else np.exp(logp)
    return out


@dataclass(frozen=True)
class Hubness:
    """A re-scoring to apply before ranking: ``method`` csls (``value`` = k) or isoftmax (``value`` = β)."""

    method: str
    value: float

    def __post_init__(self) -> None:
        if self.method not in PARAMETER:
            raise ValueError(f"hubness method must be one of {sorted(PARAMETER)}, got {self.method!r}")
        bad_k = self.method == "csls" and np.isfinite(self.value) and self.value != int(self.value)
        if not (np.isfinite(self.value) and self.value > 0) or bad_k:
            raise ValueError(f"{self.method}: {self.parameter} must be a positive "
                             f"{'integer' if self.method == 'csls' else 'number'}, got {self.value}")

    @property
    def parameter(self) -> str:
        return PARAMETER[self.method]

    def apply(self, sim: np.ndarray, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
        if self.method == "csls":
            return csls(sim, int(self.value), chunk)
        return inverted_softmax(sim, self.value, chunk, log=True)

    def to_json(self) -> dict[str, object]:
        value: object = int(self.value) if self.method == "csls" else float(self.value)
        return {"method": self.method, self.parameter: value}


def rescore(sim: np.ndarray, method: str, value: float, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """``sim`` re-scored by ``method`` ("none" returns it unchanged)."""
    return sim if method == "none" else Hubness(method, value).apply(sim, chunk)


def choose_parameter(
    method: str, pairs: Iterable[tuple[np.ndarray, np.ndarray]], grid: Sequence[float] | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[float, dict[float, float]]:
    """The grid value with the best mean MRR over ``pairs`` of (similarity, relevance), and every value's score.

    MRR rather than R@1: on the few dozen queries of a validation split it still tells values apart.
    Ties (a small split often scores several values the same) go to the value nearest the paper's
    setting on a log scale, not to a grid end.
    """
    if method not in PARAMETER:
        raise ValueError(f"hubness method must be one of {sorted(PARAMETER)}, got {method!r}")
    pairs = list(pairs)
    if not pairs:
        raise ValueError("choosing a hubness parameter needs at least one similarity matrix")
    values = list(grid if grid is not None else GRIDS[method])
    if method == "csls":  # k beyond the larger side is the same as the whole side: try it once
        largest = max(max(s.shape) for s, _ in pairs)
        values = [v for v in values if v <= largest] or [float(min(values))]
    scores: dict[float, float] = {}
    for v in values:
        mrrs = []
        for sim, rel in pairs:
            ranks = first_positive_ranks(Hubness(method, v).apply(sim, chunk), rel)
            ranks = ranks[ranks > 0]
            if len(ranks):
                mrrs.append(float(np.mean(1.0 / ranks)))
        scores[v] = float(np.mean(mrrs)) if mrrs else float("nan")
    finite = [v for v in values if np.isfinite(scores[v])]
    if not finite:
        raise ValueError("no query with a relevant item to choose the hubness parameter on")
    best = max(finite, key=lambda v: (scores[v], -abs(np.log(v / DEFAULTS[method]))))
    return best, scores
