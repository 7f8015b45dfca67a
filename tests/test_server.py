"""The HTTP API: contract, limits and clean 4xx errors in-process; text and image queries over a real
``modalign serve`` subprocess on a free loopback port."""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from test_index import EmojiSearch, emoji_search


@pytest.fixture(scope="module")
def emoji(tmp_path_factory: pytest.TempPathFactory) -> EmojiSearch:
    return emoji_search(tmp_path_factory)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(index_dir: Path, *extra: str) -> Iterator[str]:
    """``modalign serve`` in a subprocess; yields its base URL once /health answers."""
    with serve_process(index_dir, *extra) as (url, _):
        yield url


@contextlib.contextmanager
def serve_process(index_dir: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``serve`` that also yields the server process (to read its memory from /proc)."""
    port = free_port()
    exe = Path(sys.executable).parent / "modalign"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([str(exe), "serve", "--index", str(index_dir), "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # a loaded CI machine can be slow to import torch + encoders
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stdout.read().decode() if proc.stdout else ''}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in 300 s")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def client(emoji: EmojiSearch):
    from fastapi.testclient import TestClient

    from modalign.server import ServerSettings, create_app

    app = create_app(emoji.index_dir, ServerSettings(max_upload_bytes=2 * 1024 * 1024, max_text_chars=200))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _png(size: tuple[int, int] = (64, 64), color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def test_search_contract(client, emoji: EmojiSearch) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["items"] > 0
    assert {m["name"] for m in health["modalities"]} == {"image", "text"}
    r = client.post("/search", json={"text": emoji.rows[0]["text"], "k": 7, "modalities": ["image"]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 7 and all(x["modality"] == "image" for x in results)
    first = results[0]
    assert set(first) >= {"id", "modality", "score", "text", "url"}
    assert first["url"].startswith("/items/") and first["thumbnail"] == first["url"] + "/thumbnail"
    scores = [x["score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    # multipart with an image (declared as text/plain: the server looks at the bytes, not the label)
    raw = (emoji.manifest.parent / emoji.rows[0]["image"]).read_bytes()
    r = client.post("/search", files={"file": ("query.txt", raw, "text/plain")},
                    data={"k": "5", "modalities": "text", "routing": "raw"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"]["modality"] == "image" and all(x["modality"] == "text" for x in body["results"])
    # "more like this": search with an indexed item's vector
    r = client.post("/search", json={"id": first["id"], "k": 3, "routing": "raw", "modalities": ["image"]})
    assert r.json()["results"][0]["id"] == first["id"]
    # adaptive top-k returns at most k, all within δ of the best score
    r = client.post("/search", json={"text": "cat", "k": 50, "adaptive": 0.5}).json()["results"]
    assert 1 <= len(r) <= 50 and r[0]["score"] - r[-1]["score"] <= 0.5


def test_items_and_thumbnails(client, emoji: EmojiSearch) -> None:
    row = emoji.rows[0]
    r = client.get(f"/items/{row['id']}:image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (emoji.manifest.parent / row["image"]).read_bytes()
    assert r.headers["x-content-type-options"] == "nosniff"
    thumb = client.get(f"/items/{row['id']}:image/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] in ("image/webp", "image/png")
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 192
    text_id = client.post("/search", json={"text": row["text"], "k": 1, "modalities": ["text"]}).json()["results"][0]
    r = client.get(text_id["url"])
    assert r.status_code == 200 and r.json()["text"] == row["text"] and r.json()["n_rows"] >= 1
    assert client.get(text_id["url"] + "/thumbnail").status_code == 404
    for bad in ("/items/nope", "/items/..%2F..%2Fetc%2Fpasswd", "/items/%2Fetc%2Fpasswd", "/items/nope/thumbnail",
                "/items/..%2F..%2Fetc%2Fpasswd/thumbnail", "/items/../../etc/passwd/thumbnail"):
        r = client.get(bad)
        assert r.status_code == 404 and "detail" in r.json(), bad
    schema = client.get("/openapi.json").json()
    assert {"/search", "/health", "/items/{item_id}"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/search"]["post"]["requestBody"]["content"]
    page = client.get("/")
    assert page.status_code == 200 and "<title>modalign search</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "access-control-allow-origin" not in client.get("/health", headers={"Origin": "http://evil.test"}).headers


def _bomb_png(side: int) -> bytes:
    """A tiny PNG whose header claims side x side pixels: must be refused before decoding."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize(("kwargs", "status", "needle"), [
    ({"json": {"text": "x" * 201}}, 422, "limit is 200"),
    ({"json": {"text": "cat", "k": 1001}}, 422, "at most 1000"),
    ({"json": {"text": "cat", "k": 0}}, 422, "greater than or equal to 1"),
    ({"json": {"text": "cat", "k": "many"}}, 422, "valid integer"),
    ({"json": {}}, 422, "exactly one of"),
    ({"json": ["cat"]}, 422, "JSON object"),
    ({"json": {"text": "cat", "bogus": 1}}, 422, "Extra inputs"),
    ({"json": {"text": "cat", "modalities": ["video"]}}, 400, "unknown target modality"),
    ({"json": {"text": "cat", "routing": "best"}}, 422, "calibrated"),
    ({"json": {"text": "cat", "adaptive": -1}}, 422, "greater than or equal to 0"),
    ({"json": {"text": "   "}}, 400, "empty"),
    ({"json": {"text": "cat", "query_modality": "image"}}, 400, "takes image items"),
    ({"json": {"id": "nope"}}, 404, "no item"),
    ({"content": b'{"text": ', "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ({"content": b"cat", "headers": {"content-type": "text/plain"}}, 415, "application/json"),
    ({"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 422, "exactly one"),
    ({"files": {"file": ("a.png", b"", "image/png")}}, 422, "empty"),
    ({"files": {"file": ("a.png", b"just some text, not an image", "image/png")}}, 415, "unsupported file type"),
    ({"files": {"file": ("a.gif", b"GIF89a\x01\x00\x01\x00broken", "image/gif")}}, 400, "cannot"),
    ({"files": {"file": ("bomb.png", _bomb_png(9000), "image/png")}}, 400, "above the limit of 50000000 pixels"),
    ({"files": {"file": ("bomb.png", _bomb_png(60000), "image/png")}}, 400, "decompression bomb"),
    ({"files": {"file": ("thin.png", _png((1, 20_000)), "image/png")}}, 400, "aspect ratio"),
    ({"files": {"file": ("thin.png", _png((100_000, 1)), "image/png")}}, 400, "aspect ratio"),
    ({"content": b'{"text": "a\\ud800"}', "headers": {"content-type": "application/json"}}, 400, "surrogate"),
    ({"content": b'{"text": "ok", "modalities": ["\\udfff"]}', "headers": {"content-type": "application/json"}},
     400, "surrogate"),
    ({"content": b"[" * 100_000 + b"]" * 100_000, "headers": {"content-type": "application/json"}}, 400, "nested"),
    ({"content": b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
      "headers": {"content-type": "application/json"}}, 400, "nested"),
    ({"files": {"file": ("a.wav", b"RIFF\x10\x00\x00\x00WAVEfmt ", "audio/wav")}}, 400, "no audio modality"),
    ({"files": {"file": ("big.png", b"\x89PNG" + b"0" * (3 * 1024 * 1024), "image/png")}}, 413, "limit"),
    ({"files": {"file": ("a.png", _png(), "image/png")}, "data": {"text": "cat"}}, 422, "exactly one"),
])
def test_bad_requests_get_clear_4xx(client, kwargs: dict, status: int, needle: str) -> None:
    r = client.post("/search", **kwargs)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert needle in (detail if isinstance(detail, str) else str(detail)), detail
    assert "Traceback" not in r.text


def test_a_body_without_content_length_is_counted_while_it_streams(client) -> None:
    """A chunked body declares no length: the server counts what arrives and answers 413 past the limit."""
    def chunks() -> Iterator[bytes]:
        yield b'{"text": "cat", "pad": "'
        for _ in range(12):  # 3 MB against the 2 MB limit
            yield b"x" * (256 * 1024)
        yield b'"}'

    r = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 413, r.text
    assert "over the limit of 2097152 bytes" in r.json()["detail"]
    # under the limit the same chunked route is served
    small = client.post("/search", content=iter([b'{"text": "cat", ', b'"k": 3}']),
                        headers={"content-type": "application/json"})
    assert small.status_code == 200 and len(small.json()["results"]) == 3, small.text


@pytest.fixture(scope="module")
def served(emoji: EmojiSearch) -> Iterator[str]:
    """One real server for the subprocess tests, with a short timeout the stalled-upload test can wait out."""
    with serve(emoji.index_dir, "--timeout", "5") as url:
        yield url


def test_serve_subprocess_text_and_image_queries(served: str, emoji: EmojiSearch) -> None:
    url = served
    r = httpx.post(url + "/search", json={"text": emoji.rows[0]["text"], "k": 5}, timeout=60)
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 5
    raw = (emoji.manifest.parent / emoji.rows[0]["image"]).read_bytes()
    r = httpx.post(url + "/search", files={"file": ("q.png", raw, "image/png")},
                   data={"k": "5", "modalities": "image", "routing": "raw"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["id"] == f"{emoji.rows[0]['id']}:image"  # the same picture comes first
    thumb = httpx.get(url + r.json()["results"][0]["thumbnail"], timeout=30)
    assert thumb.status_code == 200 and thumb.headers["content-type"].startswith("image/")


def test_stalled_upload_gets_408(served: str) -> None:
    """A client that announces a body and stops sending is cut off after --timeout, with a JSON 408."""
    host, port = served.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"text\": ")
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        waited = time.monotonic() - start
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"did not arrive within 5 s" in reply
    assert 4 < waited < 25
    assert httpx.get(served + "/health", timeout=10).status_code == 200  # the server is still fine


def test_serve_listens_on_loopback_only(served: str) -> None:
    """Without --host the server is bound to 127.0.0.1: the kernel's socket table shows no wildcard listener."""
    port = int(served.rsplit(":", 1)[1])
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                listening.append(address)
    assert listening == ["0100007F"], listening  # 127.0.0.1, little-endian hex; no 0.0.0.0 or :: socket


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("::", True), ("192.168.1.7", True),
                                              ("localhost", False), ("127.0.0.1", False), ("::1", False)])
def test_non_loopback_host_is_warned_about(emoji: EmojiSearch, monkeypatch: pytest.MonkeyPatch, host: str,
                                           warned: bool) -> None:
    """--host off loopback prints that the API has no authentication; uvicorn gets exactly that host."""
    import uvicorn
    from typer.testing import CliRunner

    import modalign.cli.serve_cmd as serve_cmd
    from modalign.cli import app

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda _app, **kw: calls.append(kw))
    # this machine does not own the address: the port check would (rightly) refuse it before uvicorn
    monkeypatch.setattr(serve_cmd, "free_port_or_fail", lambda *_: None)
    result = CliRunner().invoke(app, ["serve", "--index", str(emoji.index_dir), "--host", host, "--port", "0"])
    assert result.exit_code == 0, result.output
    assert [c["host"] for c in calls] == [host]
    assert ("no authentication" in result.output) is warned, result.output


def test_slow_search_gets_503(emoji: EmojiSearch) -> None:
    """A search over its time budget answers 503 with Retry-After instead of keeping the client waiting."""
    from fastapi.testclient import TestClient

    from modalign.server import ServerSettings, create_app

    app = create_app(emoji.index_dir, ServerSettings(search_timeout_s=0.001))
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/search", json={"text": "a text no earlier test encoded: slow on purpose", "k": 5})
        assert r.status_code == 503, r.text
        assert "took longer than 0.001 s" in r.json()["detail"] and r.headers["retry-after"] == "5"


def test_timed_out_search_stops_its_work(emoji: EmojiSearch, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the 503 the request's work is told to stop: it raises at its next deadline check."""
    import threading

    from fastapi.testclient import TestClient

    from modalign.cancel import Cancelled, check_deadline
    from modalign.server import ServerSettings, create_app

    app = create_app(emoji.index_dir, ServerSettings(search_timeout_s=0.3))
    stopped, steps = threading.Event(), []

    def slow_encode(items: object, layers: object = None, **kwargs: object) -> None:
        try:
            for step in range(200):  # 10 s of "encoding" unless something stops it
                steps.append(step)
                time.sleep(0.05)
                check_deadline()
        except Cancelled:
            stopped.set()
            raise

    # the encoder itself is slow: the same for a micro-batched and a one-at-a-time search
    monkeypatch.setattr(app.state.index.model.encoder_for("text"), "encode", slow_encode)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/search", json={"text": "anything", "k": 5})
        assert r.status_code == 503, r.text
        assert stopped.wait(5), f"the work kept running after the timeout ({len(steps)} steps)"
    assert len(steps) < 40


def test_thin_image_encode_under_the_real_encoder_is_a_400(client) -> None:
    r = client.post("/search", files={"file": ("tall.png", _png((3, 9_000)), "image/png")})
    assert r.status_code == 400 and "3x9000" in r.json()["detail"], r.text


def _proc_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def test_server_memory_per_request_is_bounded(emoji: EmojiSearch) -> None:
    """Eight uploads of a 49-megapixel PNG at once (147 MB decoded each; 160 KB on the wire) raise the
    server's peak RSS by the decode budget (two images at full size), not by eight; thin images by ~0."""
    from modalign.encoders.image_io import DECODE_BUDGET_PIXELS

    big = _png((7000, 7000))
    with serve_process(emoji.index_dir, "--timeout", "300") as (url, proc), \
        httpx.Client(base_url=url, timeout=300) as c:
        assert c.post("/search", files={"file": ("q.png", _png(), "image/png")}).status_code == 200
        base = _proc_kib(proc.pid, "VmHWM")
        for size in ((1, 20_000), (1, 100_000)):
            r = c.post("/search", files={"file": ("thin.png", _png(size), "image/png")})
            assert r.status_code == 400, r.text
        thin = _proc_kib(proc.pid, "VmHWM") - base

        def upload(_: int) -> int:
            return c.post("/search", files={"file": ("big.png", big, "image/png")}).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(upload, range(8)))
        grew = _proc_kib(proc.pid, "VmHWM") - base
    assert codes == [200] * 8
    assert thin < 50 * 1024, thin
    one_decoded_kib = 7000 * 7000 * 3 // 1024
    budget_kib = DECODE_BUDGET_PIXELS * 3 // 1024
    # the budget plus allocator slack (measured: +374 MB here); unbounded it was +1.7 GB
    assert grew < budget_kib + 2 * one_decoded_kib, (grew, budget_kib)
    assert grew < 8 * one_decoded_kib * 0.6


def test_audio_items_are_served_by_content(tmp_path: Path) -> None:
    """An audio entry is streamed as audio/wav (sniffed from its bytes), whatever its file is called."""
    import wave

    import numpy as np
    from fastapi.testclient import TestClient

    from modalign.search import Index, Segment
    from modalign.server import create_app

    clip = tmp_path / "clip.bin"  # no telling extension on purpose
    with wave.open(str(clip), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.sin(np.arange(8000) / 5) * 8000).astype("<i2").tobytes())
    index = Index(dim=4)
    vectors = np.eye(4, dtype=np.float32)[:2]
    index.apply(Segment(
        entries=[{"id": "bell:audio", "modality": "audio", "kind": "audio", "key": "a", "text": None,
                  "path": str(clip)},
                 {"id": "bell:text", "modality": "text", "kind": "text", "key": "t", "text": "a bell", "path": None}],
        vectors=vectors, rows=[{"id": "bell", "meta": {}, "items": {"audio": "bell:audio", "text": "bell:text"}}]))
    client = TestClient(create_app(index))
    r = client.get("/items/bell:audio")
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav" and r.content == clip.read_bytes()
    assert client.get("/items/bell:audio/thumbnail").status_code == 404
    hits = client.post("/search", json={"id": "bell:audio", "k": 2, "routing": "raw"}).json()["results"]
    assert hits[0]["kind"] == "audio" and hits[0]["text"] == "a bell" and hits[0]["thumbnail"] is None
    r = client.post("/search", json={"text": "bell"})
    assert r.status_code == 400 and "no model" in r.json()["detail"]
