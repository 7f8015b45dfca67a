"""The server answers as the library does: every result field and score of POST /search equals what a
response assembled the plain way gives (``Index.search`` hits → the ``SearchResponse`` model, as the
server built its answers before it assembled them from bytes), for text, image, feature-vector and
item-id queries, one request at a time and micro-batched. Then the serving runtimes: ``serve``'s default
(onnx for a torch-built text encoder) answers as ``--runtime index`` does, on real emoji."""

from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from modalign.search import Index
from modalign.search.confidence import confidence_floors
from modalign.search.query import embed_vector
from modalign.server import ServerSettings, create_app
from modalign.server.runtimes import AS_INDEXED, AUTO, indexed_runtime, runtime_report, serving_runtimes
from modalign.server.schemas import SearchResponse, SearchResult
from test_index import EmojiSearch, emoji_search
from test_server import serve

TOL = 1e-5  # a query encoded alone or in a batch differs in the last float bits


@pytest.fixture(scope="module")
def emoji(tmp_path_factory: pytest.TempPathFactory) -> EmojiSearch:
    return emoji_search(tmp_path_factory)


@pytest.fixture(scope="module")
def index(emoji: EmojiSearch) -> Index:
    return Index.open(emoji.index_dir)


def reference(index: Index, modality: str | None, vec: np.ndarray, k: int, routing: str = "calibrated") -> dict:
    """The answer assembled the plain way: hits, one pydantic model per result, validated and dumped."""
    floors = confidence_floors(index).get(modality or "", {})
    hits = index.search_embeddings(vec[None], k, None, routing, None, modality)[0]
    results = []
    for h in hits:
        url = "/items/" + quote(h.id, safe="")
        floor = floors.get(h.modality)
        results.append(SearchResult(id=h.id, modality=h.modality, kind=h.kind, score=h.score, cosine=h.cosine,
                                    text=h.text, url=url, thumbnail=url + "/thumbnail" if h.kind == "image" else None,
                                    rows=h.rows[:20], n_rows=len(h.rows), meta=h.meta,
                                    confident=None if floor is None else bool(h.cosine >= floor)))
    judged = [r.confident for r in results if r.confident is not None]
    body = SearchResponse(results=results, query={"modality": modality, "routing": routing, "k": k,
                                                  "confidence_floor": floors or None,
                                                  "confident_match": any(judged) if judged else None})
    return body.model_dump(mode="json")


def assert_same(got: dict, want: dict) -> None:
    assert [r["id"] for r in got["results"]] == [r["id"] for r in want["results"]]
    for g, w in zip(got["results"], want["results"], strict=True):
        assert list(g) == list(w)  # same fields, same order
        for key in w:
            if key in ("score", "cosine"):
                assert g[key] == pytest.approx(w[key], abs=TOL), key
            else:
                assert g[key] == w[key], key
    took = got["query"].pop("took_ms")
    assert took >= 0
    assert got["query"] == want["query"]


@pytest.fixture(scope="module", params=["one at a time", "batched"])
def client(request: pytest.FixtureRequest, index: Index):
    settings = ServerSettings(max_batch=1) if request.param == "one at a time" else ServerSettings()
    with TestClient(create_app(index, settings), raise_server_exceptions=False) as c:
        yield c


def test_text_queries_answer_as_the_library(client: TestClient, index: Index) -> None:
    for text, k in (("smiling face", 10), ("red heart", 3), ("a cat", 50)):
        r = client.post("/search", json={"text": text, "k": k})
        assert r.status_code == 200, r.text
        modality, vec = index.embed_query(text, "text")
        want = reference(index, modality, vec, k)
        assert want["query"]["confidence_floor"] and {res["confident"] for res in want["results"]} != {None}
        assert_same(r.json(), want)
    r = client.post("/search", json={"text": "rocket", "k": 5, "routing": "raw"})
    modality, vec = index.embed_query("rocket", "text")
    assert_same(r.json(), reference(index, modality, vec, 5, routing="raw"))


def test_image_queries_answer_as_the_library(client: TestClient, index: Index, emoji: EmojiSearch) -> None:
    for row in emoji.rows[:3]:
        data = (emoji.manifest.parent / row["image"]).read_bytes()
        r = client.post("/search", files={"file": ("q.png", data, "image/png")}, data={"k": "8"})
        assert r.status_code == 200, r.text
        modality, vec = index.embed_query(data)
        assert_same(r.json(), reference(index, modality, vec, 8))


def test_vector_and_id_queries_answer_as_the_library(client: TestClient, index: Index) -> None:
    rng = np.random.default_rng(0)
    dim = index.model.encoder_for("text").dim
    features = rng.normal(size=dim).astype(np.float32)
    r = client.post("/search", json={"vector": features.tolist(), "query_modality": "text", "k": 7})
    assert r.status_code == 200, r.text
    modality, vec = embed_vector(index.model, features, "text")
    assert_same(r.json(), reference(index, modality, vec, 7))
    item = index.catalog.entry_ids[0]
    r = client.post("/search", json={"id": item, "k": 6})
    assert r.status_code == 200, r.text
    want = reference(index, index.catalog.modality[0], index.vector(item), 6)
    assert_same(r.json(), want)


def test_concurrent_queries_each_get_their_own_answer(index: Index) -> None:
    """Twenty texts at once share batches; each answer is still the one its own query gets alone."""
    texts = [f"face number {i}" for i in range(20)]
    with TestClient(create_app(index, ServerSettings(batch_wait_ms=50)), raise_server_exceptions=False) as c, \
            concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda t: c.post("/search", json={"text": t, "k": 5}).json(), texts))
    for text, got in zip(texts, answers, strict=True):
        modality, vec = index.embed_query(text, "text")
        assert_same(got, reference(index, modality, vec, 5))


# ---------------------------------------------------------------------------------------------- runtimes
def test_serving_runtimes_choice(index: Index) -> None:
    model = index.model
    assert {m: indexed_runtime(b) for m, b in model.branches.items()} == {"image": "torch", "text": "torch"}
    assert serving_runtimes(model, AUTO) == {"image": "onnx", "text": "onnx"}
    assert serving_runtimes(model, AS_INDEXED) == {}
    assert serving_runtimes(model, {"text": "onnx-int8"}) == {"text": "onnx-int8"}
    with pytest.raises(Exception, match="no modality 'audio'"):
        serving_runtimes(model, {"audio": "onnx"})
    with pytest.raises(Exception, match="encoder 'minilm' runs in torch, onnx, onnx-int8"):
        serving_runtimes(model, {"text": "tensorrt"})
    with pytest.raises(Exception, match="MODALITY=RUNTIME"):
        serving_runtimes(model, "fast")
    assert runtime_report(model, {"text": "onnx"}) == {"image": {"queries": "torch", "items": "torch"},
                                                       "text": {"queries": "onnx", "items": "torch"}}
    swapped = model.with_runtimes({"text": "onnx"})
    assert swapped.branches["text"].encoder_config["runtime"] == "onnx"
    assert model.branches["text"].encoder_config.get("runtime", "torch") == "torch"  # the original is untouched
    assert swapped.branches["image"] is model.branches["image"]


def _search(url: str, payload: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(url + "/search", json=payload, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_serve_default_runtime_answers_as_the_index_runtime(emoji: EmojiSearch) -> None:
    """`modalign serve` runs torch-built encoders in onnx (same features, less CPU); its answers match
    `--runtime index` (torch) on real emoji, and /health says which runtime queries and items used."""
    texts = ["smiling face", "red heart", "a cat", "rocket ship", "pizza"]
    answers: dict[str, list[dict[str, Any]]] = {}
    for name, extra in (("auto", ()), ("index", ("--runtime", "index"))):
        with serve(emoji.index_dir, *extra) as url:
            health = httpx.get(url + "/health").json()
            answers[name] = [_search(url, {"text": t, "k": 10}) for t in texts]
        expected = "onnx" if name == "auto" else "torch"
        assert health["runtimes"]["text"] == {"queries": expected, "items": "torch"}
        assert health["runtimes"]["image"] == {"queries": expected, "items": "torch"}
    for fast, slow in zip(answers["auto"], answers["index"], strict=True):
        slow["query"].pop("took_ms")
        assert_same(fast, slow)


def test_serve_refuses_a_runtime_the_encoder_lacks(emoji: EmojiSearch) -> None:
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "modalign"
    proc = subprocess.run([str(exe), "serve", "--index", str(emoji.index_dir), "--runtime", "text=tensorrt"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--runtime text=tensorrt: encoder 'minilm' runs in torch, onnx, onnx-int8" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_threads_and_worker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoder threads: as asked, else the cores shared out among the workers; a worker starts with OpenMP at
    that count and no tokenizer pool, unless the user set those variables."""
    import os

    from modalign.cli.serve_app import ServePlan, threads_of, worker_environment

    cores = os.cpu_count() or 1
    plan = ServePlan(index_dir="i", data_root=None, settings=ServerSettings(workers=2), hubness=False)
    assert threads_of(plan) == max(1, cores // 2)
    assert threads_of(ServePlan(index_dir="i", data_root=None, settings=ServerSettings(), hubness=False)) == cores
    assert threads_of(ServePlan(index_dir="i", data_root=None, settings=ServerSettings(workers=64), hubness=False,
                                torch_threads=0)) == 1
    assert threads_of(ServePlan(index_dir="i", data_root=None, settings=ServerSettings(), hubness=False,
                                torch_threads=3)) == 3
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    assert worker_environment(plan) == {"OMP_NUM_THREADS": str(max(1, cores // 2)), "TOKENIZERS_PARALLELISM": "false"}
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert worker_environment(plan)["OMP_NUM_THREADS"] == "7"
    roundtrip = ServePlan.from_json(dataclasses.replace(plan, runtime={"text": "onnx-int8"}).to_json())
    assert roundtrip.runtime == {"text": "onnx-int8"} and roundtrip.settings.workers == 2


def test_profile_stages_take_the_innermost_frame_that_names_one() -> None:
    """benchmarks/server_profile.py: a sample counts to the stage of its innermost frame that names one."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from server_profile import OTHER, stage_of

    encode = ["_worker (concurrent/futures/thread.py:81)", "SearchRunner.process (modalign/server/queries.py:170)",
              "encode_batch (modalign/search/query.py:57)", "Session.run (onnxruntime/capi/session.py:220)"]
    assert stage_of(encode).startswith("encoding")
    assert stage_of(encode[:2]).startswith("queueing")
    assert stage_of(["Runner.run (asyncio/runners.py:118)"]).startswith("HTTP")
    assembly = ["x (modalign/server/queries.py:1)", "ResultPayloads.body (modalign/server/payloads.py:64)"]
    assert stage_of(assembly).startswith("result assembly")
    assert stage_of(["main (<string>:1)"]) == OTHER
