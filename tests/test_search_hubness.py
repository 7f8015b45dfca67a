"""Hubness-aware search (search/hubness.py): CSLS and inverted softmax through the index's search path rank
exactly as evaluation/hubness.py does on the same similarity matrix; statistics survive save → load and
are refused once the index changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modalign.errors import ConfigError
from modalign.evaluation.hubness import csls, inverted_softmax
from modalign.search import Index
from modalign.search.hubness import HubnessStats, check_current, compute_stats, hubness_rank


def _vectors(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(docs, queries, the doc each query was drawn near)."""
    rng = np.random.default_rng(seed)
    docs = rng.normal(size=(150, 16))
    common = 4 * rng.normal(size=16)
    docs[:5] = common + 0.3 * rng.normal(size=(5, 16))  # five hubs on a direction every query leans to
    src = 5 + rng.permutation(145)[:90]
    queries = docs[src] + 0.8 * rng.normal(size=(90, 16)) + 0.3 * common
    docs, queries = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (docs, queries))
    return docs.astype(np.float32), queries.astype(np.float32), src


@pytest.mark.parametrize(("method", "value"), [("csls", 10), ("csls", 3), ("isoftmax", 30.0)])
def test_search_ranks_equal_the_evaluation_rescoring(method: str, value: float) -> None:
    docs, queries, _ = _vectors()
    index = Index.from_vectors({"image": docs, "text": queries})
    stats = compute_stats(index, method, value)
    assert stats.chosen_on == "given" and set(stats.penalty) == {("text", "image"), ("image", "text")}
    sim = queries @ docs.T
    reference = csls(sim, int(value)) if method == "csls" else inverted_softmax(sim, value, log=True)
    ranked = hubness_rank(index, stats, queries, "text", k=len(docs))
    image_pos = {p: i for i, p in enumerate(np.flatnonzero(np.asarray(index.catalog.modality) == "image"))}
    for qi, r in enumerate(ranked):
        got = [image_pos[int(p)] for p in r.ids]
        want = np.argsort(-reference[qi], kind="stable")
        np.testing.assert_allclose(reference[qi][got], reference[qi][want], atol=1e-5)  # same order (ties aside)
        if method == "csls":  # CSLS scores themselves match, r_D(q) included
            np.testing.assert_allclose(r.scores, reference[qi][got], atol=1e-4)
    plain = index.rank(queries, k=1, target_modalities=["image"], routing="raw", query_modality="text")
    top = [int(r.ids[0]) for r in ranked]
    assert top != [int(r.ids[0]) for r in plain]  # the re-scoring changes answers here (the hubs)
    hub_hits = sum(image_pos[p] < 5 for p in top)
    assert hub_hits < sum(image_pos[int(r.ids[0])] < 5 for r in plain)


def test_auto_parameter_is_chosen_on_paired_rows(tmp_path: Path) -> None:
    from modalign.search.catalog import Segment

    docs, queries, src = _vectors(1)
    index = Index.from_vectors({"image": docs})
    # rows pairing each text with the image it was drawn near: the "validation" the parameter is chosen on
    entries = [{"id": f"t{i}", "modality": "text", "kind": "vector", "key": f"t{i}", "text": None, "path": None}
               for i in range(90)]
    rows = [{"id": f"image-{src[i]}", "meta": {}, "items": {"image": f"image-{src[i]}", "text": f"t{i}"}}
            for i in range(90)]
    index.apply(Segment(entries=entries, vectors=queries, rows=rows))
    stats = compute_stats(index, "csls", "auto")
    assert stats.chosen_on.startswith("a seeded half") and stats.grid_mrr
    assert stats.grid_mrr[f"{stats.value:g}"] == max(stats.grid_mrr.values())
    stats.save(tmp_path)
    loaded = HubnessStats.load(tmp_path)
    assert loaded is not None and (loaded.method, loaded.value) == (stats.method, stats.value)
    for key, arr in stats.penalty.items():
        np.testing.assert_array_equal(loaded.penalty[key], arr)
    a = hubness_rank(index, stats, queries[:5], "text", k=5)
    b = hubness_rank(index, loaded, queries[:5], "text", k=5)
    assert all(np.array_equal(x.ids, y.ids) for x, y in zip(a, b, strict=True))


def test_stale_statistics_are_refused() -> None:
    docs, queries, _ = _vectors()
    index = Index.from_vectors({"image": docs, "text": queries})
    stats = compute_stats(index, "isoftmax", 10.0)
    stats.generation = 3
    with pytest.raises(ConfigError, match="run `modalign index --hubness isoftmax` again"):
        check_current(stats, index)
    with pytest.raises(ValueError, match="hubness must be one of"):
        compute_stats(index, "cls", 10)


def test_cli_index_hubness(tmp_path: Path) -> None:
    import json

    from helpers.cli import run_cli

    docs, queries, src = _vectors(2)
    rows = [{"id": f"r{i}", "vec_a": docs[s].tolist(), "vec_b": queries[i].tolist(), "group": f"g{s}"}
            for i, s in enumerate(src)]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache, model, out = str(tmp_path / "cache"), str(tmp_path / "model"), tmp_path / "index"
    run_cli(["fit", "--data", str(manifest), "--modalities", "vec_a,vec_b", "--method", "procrustes", "--dim", "8",
             "--cache", cache, "--out", model])
    text = run_cli(["index", "--model", model, "--data", str(manifest), "--out", str(out), "--cache", cache,
                    "--hubness", "csls"])
    assert "hubness csls k=" in text and "seeded half" in text
    meta = json.loads((out / "hubness.json").read_text())
    assert meta["method"] == "csls" and meta["chosen_on"].startswith("a seeded half")
    index = Index.open(out)
    stats = HubnessStats.load(out)
    assert stats is not None
    check_current(stats, index)  # the folder's generation is the one the statistics were computed at
    first = index.catalog.entry_ids[0]
    ranked = hubness_rank(index, stats, index.vector(first)[None], index.catalog.modality[0], k=3)
    assert len(ranked[0].ids) == 3
    bad = run_cli(["index", "--data", str(manifest), "--out", str(out), "--cache", cache, "--hubness", "csl"], code=2)
    assert "hubness must be one of" in bad and "Traceback" not in bad
    (out / "hubness.json").unlink()
    missing = run_cli(["serve", "--index", str(out), "--hubness"], code=2)
    assert "no hubness statistics" in missing and "Traceback" not in missing


def test_use_hubness_reroutes_the_search_api(tmp_path: Path) -> None:
    from modalign.search.hubness import use_hubness

    docs, queries, _ = _vectors()
    index = Index.from_vectors({"image": docs, "text": queries})
    plain = index.search_embeddings(queries[:8], k=4, target_modalities=["image"], routing="raw",
                                    query_modality="text")
    bare_before = index.search_embeddings(queries[:8], k=4, target_modalities=["image"], routing="raw")
    with pytest.raises(ConfigError, match="no hubness statistics"):
        use_hubness(index, folder=tmp_path)
    stats = use_hubness(index, compute_stats(index, "csls", 10))
    hits = index.search_embeddings(queries[:8], k=4, query_modality="text")
    want = hubness_rank(index, stats, queries[:8], "text", k=4)
    ids = [[h.id for h in row] for row in hits]
    assert ids == [[index.catalog.entry_ids[int(p)] for p in r.ids] for r in want]
    assert all(h.modality == "image" for row in hits for h in row)
    assert ids != [[h.id for h in row] for row in plain]
    # a bare embedding has no query modality: plain cosine, as before
    bare = index.search_embeddings(queries[:8], k=4, target_modalities=["image"], routing="raw")
    assert [[h.id for h in r] for r in bare] == [[h.id for h in r] for r in bare_before]
