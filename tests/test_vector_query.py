"""``/search`` with a feature vector: a precomputed-vector modality can be queried over HTTP; the vector is in
that modality's encoder space (it goes through its head) and a wrong length is a 422."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from helpers.cli import run_cli
from test_server import serve

DIM = 12
GROUPS = ["red", "green", "blue", "yellow", "black", "white", "orange", "purple", "brown", "pink"]


@pytest.fixture(scope="module")
def vector_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[float]]]:
    """Colour names paired with a noisy 12-d code per colour (a stand-in for an in-house embedding)."""
    base = tmp_path_factory.mktemp("vector-query")
    rng = np.random.default_rng(0)
    codes = {g: rng.normal(size=DIM) for g in GROUPS}
    rows, first = [], {}
    for g in GROUPS:
        for i, text in enumerate([g, f"the colour {g}", f"something {g}"]):
            vec = (codes[g] + 0.05 * rng.normal(size=DIM)).astype(np.float32).tolist()
            first.setdefault(g, vec)
            rows.append({"id": f"{g}-{i}", "text": text, "vec_code": vec, "group": g})
    manifest = base / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, index_dir, cache = base / "model", base / "index", base / "cache"
    run_cli(["fit", "--data", str(manifest), "--modalities", "vec_code,text", "--dim", "16", "--epochs", "60",
             "--val-fraction", "0", "--cache", str(cache), "--out", str(model)])
    run_cli(["index", "--model", str(model), "--data", str(manifest), "--out", str(index_dir), "--cache", str(cache)])
    return index_dir, first


def test_vector_query_over_http(vector_index: tuple[Path, dict[str, list[float]]]) -> None:
    index_dir, first = vector_index
    with serve(index_dir) as url:
        r = httpx.post(url + "/search", json={"vector": first["blue"], "k": 3, "modalities": ["vec_code"]},
                       timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query"]["modality"] == "vec_code"
        top = body["results"][0]
        assert top["id"] == "blue-0:vec_code" and top["cosine"] > 0.999  # the same vector comes first
        assert top["text"] == "blue"  # the card shows the row's text, not the raw vector
        # across modalities: the code's nearest texts are its colour's names (1 of 3 is enough for 10 colours)
        r = httpx.post(url + "/search", json={"vector": first["blue"], "k": 3, "modalities": ["text"]}, timeout=60)
        assert r.status_code == 200, r.text
        assert any("blue" in (hit["text"] or "") for hit in r.json()["results"])

        r = httpx.post(url + "/search", json={"vector": first["blue"][:5], "k": 3}, timeout=60)
        assert r.status_code == 422 and "takes 12" in r.text
        r = httpx.post(url + "/search", json={"vector": first["blue"], "text": "blue"}, timeout=60)
        assert r.status_code == 422 and "exactly one" in r.text
        r = httpx.post(url + "/search", json={"vector": first["blue"], "query_modality": "nope"}, timeout=60)
        assert r.status_code == 422 and "no modality 'nope'" in r.text
