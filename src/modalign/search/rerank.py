"""Exact re-rank of approximate candidates: re-score them against the full-precision vectors, keep the best k.

Product quantisation (``--ann ivfpq``) cannot order near-equidistant neighbours, but the true top-k are
usually among its top ``k · oversample``; scoring those few exactly (``q · v``) recovers most of the
recall and returns exact cosines. ``vectors`` is anything indexable by an id array — the ``Index``'s
in-memory array or a memory-mapped corpus file — and only the candidate rows are read.
"""

from __future__ import annotations

import numpy as np

#: candidate floats gathered at a time (bounds memory for big query batches)
CHUNK_FLOATS = 1 << 22


def rerank(queries: np.ndarray, candidates: np.ndarray, vectors: np.ndarray, k: int,
           alive: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(q, dim) unit queries and (q, c) candidate ids → exact (scores, ids), each (q, k'), best first.

    Ids < 0 (faiss padding), ids whose ``alive`` flag is False (deleted, still held by the backend) and
    repeats of an id are dropped. k' = the most valid candidates any row has, capped at k; shorter rows are padded with
    score -inf and id -1 at the end, like a faiss result.
    """
    q = np.asarray(queries, np.float32).reshape(len(candidates), -1)
    cand = np.asarray(candidates, np.int64)
    n, c = cand.shape
    if n == 1:
        return _one(q[0], cand[0], vectors, k, alive)
    valid = cand >= 0
    if alive is not None and cand.size:
        valid &= np.asarray(alive, bool)[np.maximum(cand, 0)]
    if c > 1:  # an id listed twice in a row (merged candidate lists) counts once
        order = np.argsort(cand, axis=1, kind="stable")
        ranked = np.take_along_axis(cand, order, 1)
        repeat = np.zeros_like(valid)
        repeat[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
        np.put_along_axis(valid, order, np.take_along_axis(valid, order, 1) & ~repeat, 1)
    width = min(int(k), int(valid.sum(axis=1).max(initial=0)))
    out_s = np.full((n, width), -np.inf, np.float32)
    out_i = np.full((n, width), -1, np.int64)
    if width == 0:
        return out_s, out_i
    step = max(1, CHUNK_FLOATS // max(1, c * q.shape[1]))
    for start in range(0, n, step):
        stop = min(n, start + step)
        ok = valid[start:stop]
        # one gather of every slot (invalid ones read row 0, then score -inf): the gather is the cost,
        # and one (b, c, dim) block is half the time of gathering only the valid rows and their queries
        rows = np.asarray(vectors[np.where(ok, cand[start:stop], 0).ravel()], np.float32)
        scores = np.einsum("bcd,bd->bc", rows.reshape(stop - start, c, -1), q[start:stop])
        scores[~ok] = -np.inf
        if c > width:
            top = np.argpartition(-scores, width - 1, axis=1)[:, :width]
        else:
            top = np.broadcast_to(np.arange(c), scores.shape)
        top_s = np.take_along_axis(scores, top, 1)
        order = np.argsort(-top_s, axis=1, kind="stable")
        best = np.take_along_axis(top, order, 1)
        s = np.take_along_axis(scores, best, 1)
        out_s[start:stop] = s
        out_i[start:stop] = np.where(np.isfinite(s), np.take_along_axis(cand[start:stop], best, 1), -1)
    return out_s, out_i


def _one(query: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int,
         alive: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The serving case (one query) without the batch bookkeeping: a fifth of the time."""
    ids = ids[ids >= 0]
    if alive is not None:
        ids = ids[np.asarray(alive, bool)[ids]]
    ids = np.unique(ids)  # ascending: sequential reads, each id once
    scores = np.asarray(vectors[ids], np.float32) @ query
    best = np.argsort(-scores, kind="stable")[: int(k)]
    return scores[best][None], ids[best][None]
