"""Micro-batched search: concurrent requests each get their own results (the same as alone), text and
image queries mix, a bad query fails alone, and the encoder really sees batches. No timing assertions."""

from __future__ import annotations

import asyncio
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from PIL import Image

from modalign.server.batcher import MicroBatcher
from test_index import EmojiSearch, emoji_search


@pytest.fixture(scope="module")
def emoji(tmp_path_factory: pytest.TempPathFactory) -> EmojiSearch:
    return emoji_search(tmp_path_factory)


@pytest.fixture(scope="module")
def apps(emoji: EmojiSearch) -> dict[str, Any]:
    from modalign.search import Index
    from modalign.server import ServerSettings, create_app

    index = Index.open(emoji.index_dir)  # one index (and its encoders) for both apps
    # a long wait makes every request of a gather() share one batch, however slow the machine
    return {"batched": create_app(index, ServerSettings(max_batch=64, batch_wait_ms=200)),
            "alone": create_app(index, ServerSettings(max_batch=1))}


Request = dict[str, Any]


async def _send(app: Any, requests: list[Request]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as client:
        return await asyncio.gather(*(client.post("/search", **r) for r in requests))


def send_together(app: Any, requests: list[Request]) -> list[httpx.Response]:
    return asyncio.run(_send(app, requests))


def send_alone(app: Any, requests: list[Request]) -> list[httpx.Response]:
    return [asyncio.run(_send(app, [r]))[0] for r in requests]


def _ranking(r: httpx.Response) -> list[tuple[str, float]]:
    assert r.status_code == 200, r.text
    return [(x["id"], x["score"]) for x in r.json()["results"]]


def assert_same(batched: httpx.Response, alone: httpx.Response) -> None:
    got, want = _ranking(batched), _ranking(alone)
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-4)
    assert batched.json()["query"]["modality"] == alone.json()["query"]["modality"]


def _png(size: tuple[int, int], color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def _image(emoji: EmojiSearch, i: int, **data: str) -> Request:
    raw = (emoji.manifest.parent / emoji.rows[i]["image"]).read_bytes()
    return {"files": {"file": ("q.png", raw, "image/png")}, "data": {"k": "5", **data}}


def texts(emoji: EmojiSearch, n: int) -> list[str]:
    words = sorted({k for r in emoji.rows for k in r["meta_keywords"]})
    return [f"{words[i % len(words)]} number {i}" for i in range(n)]  # distinct: none comes from the text cache


def test_concurrent_text_queries_each_get_their_own_results(apps: dict[str, Any], emoji: EmojiSearch,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    app = apps["batched"]
    encoder = app.state.index.model.encoder_for("text")
    seen: list[int] = []
    encode = encoder.encode

    def counting(items: list[Any], *args: Any, **kwargs: Any) -> Any:
        seen.append(len(items))
        return encode(items, *args, **kwargs)

    monkeypatch.setattr(encoder, "encode", counting)
    requests = [{"json": {"text": t, "k": 8 + i % 3, "routing": ("calibrated", "raw", "route")[i % 3]}}
                for i, t in enumerate(texts(emoji, 20))]
    together = send_together(app, requests)
    assert max(seen) > 1 and sum(seen) == 20, seen  # the encoder saw batches, each text once
    monkeypatch.setattr(encoder, "encode", encode)
    alone = send_alone(apps["alone"], requests)
    for got, want in zip(together, alone, strict=True):
        assert_same(got, want)
    assert len({tuple(i for i, _ in _ranking(r)) for r in together}) > 1  # not one answer for all


def test_mixed_text_image_and_id_queries(apps: dict[str, Any], emoji: EmojiSearch) -> None:
    batches: list[tuple[str, int]] = []
    runner = apps["batched"].state.runner
    runner.on_batch = lambda key, n: batches.append((key, n))
    try:
        requests: list[Request] = []
        for i, t in enumerate(texts(emoji, 6)):
            requests.append({"json": {"text": "mixed " + t, "k": 5}})
            requests.append(_image(emoji, i, routing="raw", modalities="image" if i % 2 else "text"))
            requests.append({"json": {"id": f"{emoji.rows[i]['id']}:image", "k": 4, "routing": "raw"}})
        together = send_together(apps["batched"], requests)
    finally:
        runner.on_batch = None
    alone = send_alone(apps["alone"], requests)
    for got, want in zip(together, alone, strict=True):
        assert_same(got, want)
    kinds = {key for key, _ in batches}
    assert {"text", "image", ""} <= kinds, batches  # separate batchers per query modality, ids on their own
    assert max(n for key, n in batches if key == "image") > 1, batches


def test_a_bad_query_fails_alone(apps: dict[str, Any], emoji: EmojiSearch) -> None:
    """Each bad query gets its own 4xx; the good ones sharing its batch still get the right answer."""
    good: list[Request] = [{"json": {"text": t, "k": 5}} for t in texts(emoji, 4)]
    good += [_image(emoji, 0), _image(emoji, 1)]
    bad: list[tuple[Request, int, str]] = [
        ({"json": {"text": "   "}}, 400, "empty"),
        ({"json": {"text": "cat", "modalities": ["video"]}}, 400, "unknown target modality"),
        ({"json": {"id": "nope"}}, 404, "no item"),
        # decoded in the batch, before the encoder: fails on its own
        ({"files": {"file": ("a.gif", b"GIF89a\x01\x00\x01\x00broken", "image/gif")}}, 400, "cannot"),
        # refused by the encoder itself: the batch's encoder call fails and is redone item by item
        ({"files": {"file": ("tall.png", _png((3, 9_000)), "image/png")}}, 400, "3x9000"),
    ]
    mixed = [good[0], bad[0][0], good[1], bad[1][0], good[4], bad[3][0], good[2], bad[4][0], good[5], bad[2][0],
             good[3]]
    together = send_together(apps["batched"], mixed)
    by_request = {id(r): resp for r, resp in zip(mixed, together, strict=True)}
    for request, status, needle in bad:
        r = by_request[id(request)]
        assert r.status_code == status, r.text
        assert needle in r.json()["detail"]
    for request, want in zip(good, send_alone(apps["alone"], good), strict=True):
        assert_same(by_request[id(request)], want)


# ---------------------------------------------------------------------------------------------- the batcher
def _double_or_fail(items: list[int]) -> list[int | BaseException]:
    return [ValueError(f"bad {i}") if i < 0 else 2 * i for i in items]


def test_batcher_results_errors_and_max_batch() -> None:
    sizes: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        batcher: MicroBatcher[int, int] = MicroBatcher(_double_or_fail, pool, max_batch=4, wait_s=0.5,
                                                       on_batch=sizes.append)

        async def main() -> list[Any]:
            return await asyncio.gather(*(batcher.submit(i) for i in (1, -2, 3, 4, 5, -6, 7)), return_exceptions=True)

        got = asyncio.run(main())
    assert got[0] == 2 and got[2] == 6 and got[6] == 14
    assert isinstance(got[1], ValueError) and str(got[1]) == "bad -2" and isinstance(got[5], ValueError)
    assert sum(sizes) == 7 and max(sizes) == 4  # a full batch goes without waiting out wait_s


def test_batcher_skips_a_cancelled_request_and_survives_a_broken_batch() -> None:
    started, release = threading.Event(), threading.Event()
    processed: list[list[int]] = []

    def process(items: list[int]) -> list[int | BaseException]:
        processed.append(list(items))
        if items[0] == 0:  # hold the first batch so the next requests queue behind it
            started.set()
            release.wait(10)
        if 99 in items:
            raise RuntimeError("the batch call broke")
        return list(items)

    with ThreadPoolExecutor(1) as pool:
        batcher: MicroBatcher[int, int] = MicroBatcher(process, pool, max_batch=8, wait_s=0.0)

        async def main() -> tuple[Any, ...]:
            first = asyncio.ensure_future(batcher.submit(0))
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
            gone = asyncio.ensure_future(batcher.submit(1))
            kept = asyncio.ensure_future(batcher.submit(2))
            await asyncio.sleep(0)
            gone.cancel()  # e.g. its timeout passed while it waited for the busy encoder
            release.set()
            results = await asyncio.gather(first, kept, gone, return_exceptions=True)
            broken = await asyncio.gather(batcher.submit(99), batcher.submit(3), return_exceptions=True)
            after = await batcher.submit(4)  # the batcher still works after a broken batch
            return (*results, *broken, after)

        first, kept, gone, broken, with_broken, after = asyncio.run(main())
    assert (first, kept, after) == (0, 2, 4)
    assert isinstance(gone, asyncio.CancelledError)
    assert [1] not in processed and all(1 not in batch for batch in processed)  # nobody worked for it
    assert isinstance(broken, RuntimeError) and isinstance(with_broken, RuntimeError)
