"""A bounded load test on loopback: concurrent searches against ``modalign serve``, no errors allowed.

CI runs 300 requests with 16 in flight; ``benchmarks/search.py`` runs the 2,000-request version.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

from test_index import EmojiSearch, emoji_search
from test_server import serve

REQUESTS = 300
CONCURRENCY = 16


@pytest.fixture(scope="module")
def emoji(tmp_path_factory: pytest.TempPathFactory) -> EmojiSearch:
    return emoji_search(tmp_path_factory)


async def load(url: str, payloads: list[dict], concurrency: int) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    errors: list[str] = []
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            payload = queue.get_nowait()
            start = time.perf_counter()
            try:
                r = await client.post("/search", json=payload)
                if r.status_code != 200 or not r.json()["results"]:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, errors


def payloads(emoji: EmojiSearch, n: int) -> list[dict]:
    """A realistic mix: distinct texts (encoded), repeated popular texts, item-id searches, filters."""
    texts = sorted({r["text"] for r in emoji.rows} | {k for r in emoji.rows for k in r["meta_keywords"]})
    ids = [f"{r['id']}:image" for r in emoji.rows]
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append({"id": ids[i % len(ids)], "k": 10})
        elif kind == 1:
            out.append({"text": texts[i % len(texts)], "k": 10, "modalities": ["image"]})
        else:
            out.append({"text": f"{texts[i % len(texts)]} {i}", "k": 20, "routing": "calibrated"})
    return out


def test_concurrent_load_has_no_errors(emoji: EmojiSearch) -> None:
    with serve(emoji.index_dir) as url:
        warm = httpx.post(url + "/search", json={"text": "warm up", "k": 1}, timeout=60)
        assert warm.status_code == 200
        start = time.perf_counter()
        latencies, errors = asyncio.run(load(url, payloads(emoji, REQUESTS), CONCURRENCY))
        wall = time.perf_counter() - start
    assert not errors, errors[:5]
    assert len(latencies) == REQUESTS
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    print(f"load: {REQUESTS} requests, {CONCURRENCY} concurrent, 0 errors, {REQUESTS / wall:.0f} req/s, "
          f"p50 {p50:.0f} ms, p99 {p99:.0f} ms")
