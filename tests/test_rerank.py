"""Exact re-rank of IVF-PQ candidates (``search/rerank.py``): the exact top-k whenever it is among the
candidates, recall at least that of the PQ order, exact cosines, deleted ids never returned, -1 padding,
``--rerank`` through the CLI and saved with the index; on a generated clustered corpus and on real emoji."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from test_index import EmojiSearch, emoji_search, run_cli
from test_ivfpq import _clustered

K = 10


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


@pytest.fixture(scope="module")
def clustered_index():  # type: ignore[no-untyped-def]
    """8k clustered vectors in an in-memory ivfpq Index with coarse 4-byte codes (PQ alone orders them poorly)."""
    from modalign.search import Index

    vectors = _clustered(8_000, 11)
    index = Index.from_vectors({"vec": vectors}, backend="ivfpq",
                               backend_params={"m": 4, "nprobe": 16, "train_size": 4_000, "rerank": 4})
    return index, vectors, _clustered(150, 12)


def test_rerank_is_exact_when_the_truth_is_among_the_candidates(tmp_path: Path) -> None:
    from modalign.search.rerank import rerank

    vectors = _clustered(3_000, 5)
    path = tmp_path / "v.npy"
    np.save(path, vectors)
    mapped = np.load(path, mmap_mode="r")  # the benchmark's case: rows read from a memory-mapped file
    queries = _clustered(40, 6)
    exact = queries @ vectors.T
    truth = np.argsort(-exact, axis=1)[:, :K]
    rng = np.random.default_rng(0)
    # the true top-10 hidden among 30 other rows (some repeated), in random order, with faiss-style -1 padding
    candidates = np.concatenate([truth, rng.integers(0, len(vectors), (40, 30)), np.full((40, 5), -1)], axis=1)
    candidates = rng.permuted(candidates, axis=1)
    for source in (vectors, mapped):
        scores, ids = rerank(queries, candidates, source, K)
        np.testing.assert_array_equal(ids, truth)
        np.testing.assert_allclose(scores, np.take_along_axis(exact, truth, 1), atol=1e-6)
        for r in range(0, 40, 7):  # one query at a time (the serving path) agrees
            np.testing.assert_array_equal(rerank(queries[r], candidates[r : r + 1], source, K)[1], truth[r : r + 1])


def test_rerank_drops_dead_and_padding() -> None:
    from modalign.search.rerank import rerank

    vectors = _clustered(500, 7)
    queries = vectors[:3]
    candidates = np.array([[0, 1, 2, 3, -1, -1], [4, 5, -1, -1, -1, -1], [-1] * 6])
    alive = np.ones(len(vectors), bool)
    alive[[1, 5]] = False
    scores, ids = rerank(queries, candidates, vectors, K, alive)
    assert ids.shape == (3, 3)  # the longest row has 3 live candidates
    assert set(ids[0]) == {0, 2, 3} and ids[0, 0] == 0  # a vector is its own best match
    assert list(ids[1]) == [4, -1, -1] and list(ids[2]) == [-1, -1, -1]
    assert np.isneginf(scores[1, 1:]).all() and np.isneginf(scores[2]).all()
    assert rerank(queries, np.full((3, 4), -1), vectors, K)[1].shape == (3, 0)
    for r in range(3):
        one_s, one = rerank(queries[r], candidates[r : r + 1], vectors, K, alive)
        np.testing.assert_array_equal(one[0], ids[r][ids[r] >= 0])
        np.testing.assert_allclose(one_s[0], scores[r][ids[r] >= 0], atol=1e-6)


def test_index_rerank_beats_pq_order_with_exact_cosines(clustered_index) -> None:  # type: ignore[no-untyped-def]
    index, vectors, queries = clustered_index
    backend = index.corpora["vec"].backend
    assert backend.rerank == 4
    exact = queries @ vectors.T
    truth = np.argsort(-exact, axis=1)[:, :K]
    reranked = index.rank(queries, K, routing="raw")
    found = np.array([r.ids for r in reranked])
    # the exact top-k wherever the PQ search put it among its k·rerank candidates
    _, candidates = backend.search(queries, K * backend.rerank)
    among = np.array([np.isin(t, c).all() for t, c in zip(truth, candidates, strict=True)])
    assert among.mean() > 0.5, among.mean()
    np.testing.assert_array_equal(found[among], truth[among])
    for r, q in zip(reranked, exact, strict=True):
        np.testing.assert_allclose(r.scores, q[r.ids], atol=1e-5)  # exact cosines, best first
        assert np.all(np.diff(r.scores) <= 0)
    # one query at a time (the serving path) gives the same answer
    np.testing.assert_array_equal([h.id for h in index.search(queries[3], k=K, routing="raw")],
                                  [f"vec-{i}" for i in found[3]])
    backend.rerank = 1  # the PQ order alone, same codes
    try:
        plain = np.array([r.ids for r in index.rank(queries, K, routing="raw")])
    finally:
        backend.rerank = 4
    r_plain, r_rerank = _recall(plain, truth), _recall(found, truth)
    assert r_rerank >= r_plain + 0.1 and r_rerank >= 0.9, (r_plain, r_rerank)


def test_index_rerank_never_returns_deleted(clustered_index) -> None:  # type: ignore[no-untyped-def]
    from modalign.search import Index

    _, vectors, queries = clustered_index
    index = Index.from_vectors({"vec": vectors[:3_000], "few": vectors[3_000:3_004]}, backend="ivfpq",
                               backend_params={"m": 4, "train_size": 2_000})
    before = index.rank(queries[:20], K, routing="raw", target_modalities=["vec"])
    gone = sorted({f"vec-{p}" for r in before for p in r.ids[:3]})
    index.delete(gone)
    dead = np.array([index.catalog.position[g] for g in gone])
    after = index.rank(queries[:20], K, routing="raw", target_modalities=["vec"])
    assert all(len(r.ids) == K and not np.isin(r.ids, dead).any() for r in after)
    # a 4-item corpus asked for k·rerank = 40: faiss pads with -1, which never comes back
    few = index.rank(queries[:5], K, routing="raw", target_modalities=["few"])
    assert all(sorted(r.ids) == list(range(3_000, 3_004)) for r in few)
    # calibrated routing over both corpora: exact cosines from each
    for r, q in zip(index.rank(queries[:5], K), queries[:5], strict=True):
        np.testing.assert_allclose(r.cosines, index._vectors[r.ids] @ q, atol=1e-5)
        assert not np.isin(r.ids, dead).any()


def test_cli_rerank_is_saved_with_the_index(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    from modalign.search import Index

    emoji: EmojiSearch = emoji_search(tmp_path_factory)
    out = tmp_path / "ivfpq"
    args = ["index", "--model", str(emoji.model_dir), "--data", str(emoji.manifest), "--out", str(out),
            "--cache", str(emoji.cache_root)]
    assert "needs --ann ivfpq" in run_cli([*args, "--rerank", "3"], code=2)
    run_cli([*args, "--ann", "ivfpq", "--rerank", "8"])
    approx, exact = Index.open(out), Index.open(emoji.index_dir)
    assert all(c.backend.config()["rerank"] == 8 for c in approx.corpora.values())
    run_cli([*args, "--rerank", "8"])  # the same value on an existing index is fine
    assert "built with --rerank 8" in run_cli([*args, "--rerank", "2"], code=2)
    # with every candidate re-scored, the small emoji corpus ranks exactly like the exact index
    for row in emoji.rows[::6]:
        a = exact.search(row["text"], k=K, routing="raw", target_modalities=["image"])
        b = approx.search(row["text"], k=K, routing="raw", target_modalities=["image"])
        assert [h.id for h in b] == [h.id for h in a]
        np.testing.assert_allclose([h.cosine for h in b], [h.cosine for h in a], atol=1e-5)
