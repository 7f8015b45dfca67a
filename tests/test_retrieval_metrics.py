"""Retrieval metrics on hand-built similarity matrices."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from modalign.evaluation import first_positive_ranks, metrics_from_ranks, modality_gap, retrieval_metrics
from modalign.evaluation.retrieval import chance_metrics
from modalign.metrics import mutual_knn, rice_k


def test_ranks_single_positive() -> None:
    sim = np.array([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.2, 0.3, 0.1]])
    rel = np.eye(3, dtype=bool)
    assert first_positive_ranks(sim, rel).tolist() == [1, 2, 3]
    m = retrieval_metrics(sim, rel, ks=(1, 2))
    assert m["R@1"] == pytest.approx(1 / 3)
    assert m["R@2"] == pytest.approx(2 / 3)
    assert m["MRR"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert m["median_rank"] == 2


def test_any_positive_counts() -> None:
    sim = np.array([[0.1, 0.9, 0.5, 0.4]])
    rel = np.array([[True, False, False, True]])  # positives score 0.1 and 0.4: best is 0.4, rank 3
    assert first_positive_ranks(sim, rel).tolist() == [3]


def test_ties_count_against_the_query() -> None:
    sim = np.array([[0.5, 0.5, 0.5]])
    rel = np.array([[False, True, False]])
    assert first_positive_ranks(sim, rel).tolist() == [3]


def test_queries_without_positive_are_ignored() -> None:
    ranks = first_positive_ranks(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[True, False], [False, False]]))
    assert ranks.tolist() == [1, 0]
    assert metrics_from_ranks(ranks)["queries"] == 1


def test_modality_gap() -> None:
    za = np.array([[1.0, 0.0], [1.0, 0.0]])
    zb = np.array([[0.0, 1.0], [0.0, 1.0]])
    assert modality_gap(za, zb) == pytest.approx(np.sqrt(2))
    assert modality_gap(za, za) == 0.0


def test_mutual_knn_identity_and_rotation_invariance() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert mutual_knn(x, x) == 1.0
    assert mutual_knn(x, x @ q) == pytest.approx(1.0)
    assert mutual_knn(x, rng.normal(size=(60, 8))) < 0.4
    assert rice_k(1000) == 20


def test_mutual_knn_hand_case() -> None:
    # points on a line: A's and B's neighbour sets with k=1 agree for 2 of 4 points
    a = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    b = np.array([[1.0, 0.0], [0.0, 1.0], [0.99, 0.1], [0.1, 0.99]])
    # A: 0<->1, 2<->3 ; B: 0<->2, 1<->3
    assert mutual_knn(a, b, k=1) == pytest.approx(0.0)
    assert mutual_knn(a, a[[1, 0, 3, 2]][[1, 0, 3, 2]], k=1) == 1.0


def test_a_nan_similarity_never_counts_as_a_hit():
    from modalign.evaluation.retrieval import first_positive_ranks

    nan = float("nan")
    rel = np.array([[True, False, False], [False, True, False], [True, False, False]])
    sim = np.array([[nan, 0.1, 0.2],  # NaN positive: ranked after every negative
                    [0.9, 0.5, nan],  # NaN negative: counts above the positive
                    [0.3, nan, nan]])  # NaN negatives: both above
    assert first_positive_ranks(sim, rel).tolist() == [3, 3, 3]
    all_nan = np.full((2, 2), nan)
    assert first_positive_ranks(all_nan, np.eye(2, dtype=bool)).tolist() == [2, 2]


def test_no_scored_query_gives_every_key_as_nan_and_zero_queries() -> None:
    """Ranks of 0 mean "no positive in the gallery": with only those, every metric is NaN, under the same keys
    as a scored direction (the eval --json contract), and the query count is 0."""
    for ranks in (np.array([], dtype=np.int64), np.array([0, 0])):
        got = metrics_from_ranks(ranks, ks=(1, 5))
        scored = metrics_from_ranks(np.array([1, 3]), ks=(1, 5))
        assert set(got) == set(scored) == {"R@1", "R@5", "MRR", "median_rank", "mean_rank", "queries"}
        assert got["queries"] == 0 and all(np.isnan(v) for k, v in got.items() if k != "queries")
    assert metrics_from_ranks(np.array([1, 3, 0]), ks=(1, 5)) == pytest.approx(
        {"R@1": 0.5, "R@5": 1.0, "MRR": (1 + 1 / 3) / 2, "median_rank": 2.0, "mean_rank": 2.0, "queries": 2})


def test_chance_metrics_equal_every_random_order_enumerated() -> None:
    """Expected R@K and MRR of a random ranking, against all 5! orders of a 5-item gallery: queries with 1, 2
    and 5 relevant items (so unequal weights), and one with none, which is left out like the metrics do."""
    rel = np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    hits = {k: [] for k in (1, 2, 5)}
    rr = []
    for order in itertools.permutations(range(5)):
        for row in rel[:4]:
            first = next(j for j, item in enumerate(order, start=1) if row[item])
            rr.append(1 / first)
            for k in hits:
                hits[k].append(first <= k)
    got = chance_metrics(rel, ks=(1, 2, 5))
    assert got == pytest.approx({"R@1": np.mean(hits[1]), "R@2": np.mean(hits[2]), "R@5": 1.0, "MRR": np.mean(rr)})
    none = chance_metrics(np.zeros((3, 4), bool), ks=(1, 5))
    assert set(none) == {"R@1", "R@5", "MRR"} and all(np.isnan(v) for v in none.values())
