"""Modality routing and adaptive top-k: the math on synthetic vectors, the same-modality bias on real emoji."""

from __future__ import annotations

import numpy as np
import pytest

from modalign.search import Index
from modalign.search.routing import CorpusStats, merge, target_modalities
from test_index import EmojiSearch, emoji_search


@pytest.fixture(scope="module")
def emoji(tmp_path_factory: pytest.TempPathFactory) -> EmojiSearch:
    return emoji_search(tmp_path_factory)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_score_moments_are_exact() -> None:
    rng = np.random.default_rng(0)
    corpus = _unit(rng.standard_normal((500, 24)) + 1.5 * np.eye(24)[0])
    queries = _unit(rng.standard_normal((7, 24)))
    mu, sd = CorpusStats.from_vectors(corpus, chunk=128).moments(queries)
    scores = queries.astype(np.float64) @ corpus.T.astype(np.float64)
    np.testing.assert_allclose(mu, scores.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(sd, scores.std(axis=1), atol=1e-5)


def test_targets_and_merge_rules() -> None:
    mods = ["image", "text", "audio"]
    assert target_modalities("raw", mods, "text", None) == mods
    assert target_modalities("calibrated", mods, "text", ["image"]) == ["image"]
    assert target_modalities("route", mods, "text", None) == ["image", "audio"]
    assert target_modalities("route", ["text"], "text", None) == ["text"]
    with pytest.raises(ValueError, match="unknown target modality"):
        target_modalities("raw", mods, "text", ["video"])
    with pytest.raises(ValueError, match="routing must be one of"):
        target_modalities("best", mods, "text", None)

    cands = {"text": (np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 1, 2])),
             "image": (np.array([0.5, 0.45], np.float32), np.array([10, 11]))}
    raw = merge(cands, "raw", k=4)
    assert raw.ids.tolist() == [0, 1, 2, 10]
    # text scores are ordinary for their corpus (mean 0.8), image scores exceptional (mean 0.1)
    moments = {"text": (0.8, 0.1), "image": (0.1, 0.1)}
    cal = merge(cands, "calibrated", k=4, moments=moments)
    assert cal.ids.tolist() == [10, 11, 0, 1] and cal.modalities[:2] == ["image", "image"]
    np.testing.assert_allclose(cal.scores, [4.0, 3.5, 1.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(cal.cosines, [0.5, 0.45, 0.9, 0.8], atol=1e-6)
    assert merge(cands, "raw", k=10, adaptive=0.15).ids.tolist() == [0, 1]
    assert merge(cands, "raw", k=1, adaptive=1.0).ids.tolist() == [0]  # at most k
    assert merge(cands, "calibrated", k=10, moments=moments, adaptive=0.0).ids.tolist() == [10]


@pytest.mark.parametrize("backend", ["exact", "hnsw", "ivf"])
def test_adaptive_top_k_on_an_index(backend: str) -> None:
    rng = np.random.default_rng(1)
    centers = _unit(rng.standard_normal((20, 32)))
    vectors = _unit(np.repeat(centers, 30, axis=0) + 0.05 * rng.standard_normal((600, 32)))
    index = Index.from_vectors({"vector": vectors}, backend=backend)
    hits = index.search(centers[3], k=100, routing="raw", adaptive=0.3)
    assert 25 <= len(hits) <= 30  # one cluster: its 30 members are within δ of the best, nothing else
    assert {int(h.id.split("-")[1]) // 30 for h in hits} == {3}
    assert all(hits[0].score - h.score <= 0.3 for h in hits)
    assert len(index.search(centers[3], k=5, routing="raw", adaptive=0.3)) == 5


def _own_share(index: Index, queries: np.ndarray, own: str, exclude: list[str] | None, routing: str) -> float:
    """Share of the query's own modality in its top-10 (``exclude``: each query's own item)."""
    results = index.search_embeddings(queries, 11, routing=routing, query_modality=own)
    shares = []
    for i, hits in enumerate(results):
        kept = [h for h in hits if exclude is None or h.id != exclude[i]][:10]
        shares.append(np.mean([h.modality == own for h in kept]))
    return float(np.mean(shares))


def test_calibrated_routing_fixes_the_same_modality_bias(emoji: EmojiSearch) -> None:
    """Mixed emoji corpus (images + names). A ranking blind to modality would return each modality in
    proportion to its share of the corpus; under raw cosine a query over-returns its own modality."""
    index = Index.open(emoji.index_dir)
    names = {r["text"] for r in emoji.rows}
    keywords = sorted({k for r in emoji.rows for k in r["meta_keywords"]} - names)  # short queries, not in the index
    text_q = np.stack([index.embed_query(q)[1] for q in keywords])
    image_ids = [f"{r['id']}:image" for r in emoji.rows]
    image_q = np.stack([index.vector(i) for i in image_ids])
    counts = index.counts()
    fair = {m: n / sum(counts.values()) for m, n in counts.items()}

    lift = {}
    for routing in ("raw", "calibrated"):
        lift["text", routing] = _own_share(index, text_q, "text", None, routing) / fair["text"]
        lift["image", routing] = _own_share(index, image_q, "image", image_ids, routing) / fair["image"]
    print("own-modality share@10 / corpus share:", {f"{q} query, {r}": round(v, 2) for (q, r), v in lift.items()})
    assert lift["text", "raw"] >= 1.8  # texts come back at ≥ 1.8x their share of the corpus
    assert lift["text", "calibrated"] <= 1.4 and lift["text", "calibrated"] <= lift["text", "raw"] - 0.6
    assert lift["image", "calibrated"] < lift["image", "raw"]
    # route sends the query only to the other modalities
    routed = index.search_embeddings(text_q[:5], 10, routing="route", query_modality="text")
    assert all(h.modality == "image" for hits in routed for h in hits)
