"""``/docs`` works offline: the Swagger UI page references only this server's URLs, and each of them answers."""

from __future__ import annotations

import re

import numpy as np
from fastapi.testclient import TestClient

from modalign.search import Index, Segment
from modalign.server import create_app


def _client() -> TestClient:
    index = Index(dim=4)
    index.apply(Segment(
        entries=[{"id": "a:text", "modality": "text", "kind": "text", "key": "t", "text": "a", "path": None}],
        vectors=np.eye(4, dtype=np.float32)[:1], rows=[{"id": "a", "meta": {}, "items": {"text": "a:text"}}]))
    return TestClient(create_app(index))


def test_docs_page_uses_only_local_assets() -> None:
    client = _client()
    r = client.get("/docs")
    assert r.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", r.text)
    assert any(u.endswith(".js") for u in urls) and any(u.endswith(".css") for u in urls), urls
    remote = [u for u in urls if re.match(r"^(https?:)?//", u)]
    assert not remote, f"/docs loads from another host: {remote}"
    for url in urls:
        got = client.get(url)
        assert got.status_code == 200, url
    assert "openapi" in client.get("/openapi.json").json()


def test_no_cdn_docs_page_left() -> None:
    client = _client()
    assert client.get("/redoc").status_code == 404  # FastAPI's ReDoc page would fetch its script from a CDN
