"""IVF-PQ (``--ann ivfpq``): trained on a sample, fed in chunks from a memory map (bounded memory),
recall against exact search, save/load and deletes; and ``modalign index --ann ivfpq`` on real emoji."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from test_index import EmojiSearch, emoji_search, run_cli

N, DIM = 20_000, 32


def _clustered(n: int, seed: int) -> np.ndarray:
    """Unit vectors around 300 shared centres (embedding spaces are clustered, not uniform)."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((300, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> np.memmap:
    path = tmp_path_factory.mktemp("ivfpq") / "vectors.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(N, DIM))
    out[:] = _clustered(N, 1)
    out.flush()
    return np.load(path, mmap_mode="r")


def test_ivfpq_streams_chunks_and_recalls(corpus: np.memmap, tmp_path: Path) -> None:
    import faiss  # noqa: F401  (imported before tracing: its module objects are not the corpus)

    from modalign.search.backends import BACKENDS

    backend = BACKENDS.create("ivfpq", dim=DIM, m=16, nprobe=32, train_size=5_000, chunk=2_048)
    tracemalloc.start()
    try:
        backend.add(corpus, np.arange(N, dtype=np.int64))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the train sample (5k rows) plus one chunk are copied, never the whole corpus
    assert peak < corpus.nbytes * 0.4, (peak, corpus.nbytes)
    assert len(backend) == N and backend.code_bytes() == 16  # 16 bytes/vector instead of 4·32
    queries = _clustered(200, 2)
    _, found = backend.search(queries, 10)
    truth = np.argsort(-(queries @ np.asarray(corpus).T), axis=1)[:, :10]
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.75, recall  # 0.84 measured
    top1 = np.mean(found[:, 0] == truth[:, 0])
    assert top1 >= 0.6, top1

    backend.save(tmp_path / "a.faiss")
    again = BACKENDS.create("ivfpq", dim=DIM, nprobe=32)
    again.load(tmp_path / "a.faiss")
    np.testing.assert_array_equal(again.search(queries, 10)[1], found)
    again.remove(found[:, 0])
    assert len(again) == N - len(set(found[:, 0])) and not np.isin(again.search(queries, 10)[1], found[:, 0]).any()


def test_ivfpq_tiny_corpus_still_works() -> None:
    from modalign.search.backends import BACKENDS

    x = _clustered(40, 3)
    backend = BACKENDS.create("ivfpq", dim=DIM)
    backend.add(x, np.arange(40) + 100)
    _, ids = backend.search(x[:5], 3)
    assert ids.shape == (5, 3) and np.isin(ids, np.arange(40) + 100).all()


def test_index_cli_ivfpq_agrees_with_exact(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    from modalign.search import Index

    emoji: EmojiSearch = emoji_search(tmp_path_factory)
    out = tmp_path / "ivfpq"
    msg = run_cli(["index", "--model", str(emoji.model_dir), "--data", str(emoji.manifest), "--out", str(out),
                   "--ann", "ivfpq", "--cache", str(emoji.cache_root)])
    assert "ivfpq" in msg and any(p.name.endswith(".faiss") for p in out.iterdir())
    exact, approx = Index.open(emoji.index_dir), Index.open(out)
    assert approx.backend == "ivfpq" and len(approx) == len(exact)
    overlap = []
    for row in emoji.rows[::4]:
        a = [h.id for h in exact.search(row["text"], k=10, routing="raw", target_modalities=["image"])]
        b = [h.id for h in approx.search(row["text"], k=10, routing="raw", target_modalities=["image"])]
        overlap.append(len(set(a) & set(b)) / 10)
    assert np.mean(overlap) >= 0.7, overlap
