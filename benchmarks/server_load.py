"""Server throughput against the raw batched encoder + search, and the demo's wall time and peak RSS.

    .venv/bin/python benchmarks/server_load.py                        # everything (~15 min on 2 cores)
    .venv/bin/python benchmarks/server_load.py --parts raw,server     # skip the two demo runs

One run, in this order:

1. ``modalign demo --out WORK/demo`` twice: the first fills the feature cache unless it already holds
   the emoji features (the JSON says which it found), the second is the cached rerun. Peak RSS is the
   child's VmHWM, polled (ru_maxrss would carry this process's RSS over the fork).
2. A small emoji index (``--limit`` concepts × 4 styles, default encoders).
3. Raw: texts encoded 64 at a time and searched as one batch (``encode_batch`` + ``search_embeddings``),
   with the server's one torch thread; 64 images the same way. Best of 3 rounds.
4. ``modalign serve`` as a real process on a free port, each variant in turn: ``--max-batch 1`` (one
   request at a time: the server before micro-batching), the default micro-batching, ``--workers 2``
   (two worker processes on one port over one memory-mapped copy of the index), and two separate batched
   processes side by side (clients split between them). 1, 8 and 32 concurrent httpx clients send
   distinct text queries (never in the query cache), every 16th an image upload, then 32 clients with text
   queries only. Each is compared with the raw rate of the same queries (text only: the raw text rate; the
   mix: the raw text and image rates combined in the same proportion). The CPU time of the servers and of
   the clients per query, and how busy the cores were, say where the time went. Two rounds in ABBA
   order; the better round of each setting is reported (the machine is shared, so both are in the JSON).

The load generator runs on the same 2 cores as the server, so the server numbers are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

EXE = str(Path(sys.executable).parent / "modalign")
CLIENTS = (1, 8, 32)
IMAGE_EVERY = 16
BATCH = 64
#: client loops per httpx connection pool
POOL = 8


# ---------------------------------------------------------------------------------------------- demo
def peak_rss_run(cmd: list[str]) -> dict[str, Any]:
    """Wall time and peak RSS (VmHWM, polled every 0.1 s) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak_kb = 0
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True)
    reader.start()
    while proc.poll() is None:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        time.sleep(0.1)
    reader.join(10)
    return {"exit_code": proc.returncode, "wall_s": time.perf_counter() - start, "peak_rss_mb": peak_kb / 1024,
            "tail": "".join(output[-3:]).strip()}


def bench_demo(work: Path) -> dict[str, Any]:
    out = work / "demo"
    cmd = [EXE, "demo", "--out", str(out)]
    first = peak_rss_run(cmd)
    print(json.dumps({"demo_first": first}), flush=True)
    second = peak_rss_run(cmd)
    print(json.dumps({"demo_rerun": second}), flush=True)
    return {"command": "modalign demo --out DIR (twice)", "first": first, "rerun": second,
            "note": "the first run extracts features unless the default feature cache already holds them; "
                    "compare its wall time with the rerun's to see which happened"}


# ---------------------------------------------------------------------------------------------- index
def emoji_index(work: Path, limit: int) -> Path:
    data, model, index, cache = work / "emoji", work / "model", work / "index", work / "cache"
    if not (data / "manifest.jsonl").exists():
        subprocess.run([EXE, "datasets", "prepare", "emoji", "--out", str(data), "--limit", str(limit)], check=True)
    if not (model / "config.json").exists():
        subprocess.run([EXE, "fit", "--data", str(data / "manifest.jsonl"), "--modalities", "image,text",
                        "--cache", str(cache), "--out", str(model)], check=True)
    if not (index / "index.json").exists():
        subprocess.run([EXE, "index", "--model", str(model), "--data", str(data / "manifest.jsonl"),
                        "--out", str(index), "--cache", str(cache)], check=True)
    return index


def query_texts(index_dir: Path) -> list[str]:
    from modalign.search import Index

    index = Index.open(index_dir)
    words = {k for row in index.catalog.rows.values() for k in row["meta"].get("meta_keywords", [])}
    words |= {t for t in index.catalog.text if t}
    return sorted(words)


def image_bytes(manifest: Path, n: int = 32) -> list[bytes]:
    """Query images from the manifest (relative to it), whatever paths the index stores."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    return [(manifest.parent / r["image"]).read_bytes() for r in rows[:n]]


# ---------------------------------------------------------------------------------------------- raw
def bench_raw(index_dir: Path, words: list[str], images: list[bytes], rounds: int = 3) -> dict[str, Any]:
    import torch

    from modalign.encoders.image_io import open_image
    from modalign.search import Index
    from modalign.search.query import encode_batch

    torch.set_num_threads(1)  # as `modalign serve` runs its encoders
    index = Index.open(index_dir)
    model = index.model
    texts = [f"{words[i % len(words)]} raw {i}" for i in range(10 * BATCH)]
    pils = [open_image(b) for b in (images * (BATCH // len(images) + 1))[:BATCH]]
    encode_batch(model, "text", texts[:BATCH])  # warm-up
    encode_batch(model, "image", pils[:8])

    def texts_round(search: bool) -> float:
        start = time.perf_counter()
        for b in range(0, len(texts), BATCH):
            vecs = encode_batch(model, "text", texts[b : b + BATCH])
            if search:
                index.search_embeddings(vecs, 10)
        return len(texts) / (time.perf_counter() - start)

    def one_at_a_time() -> float:
        start = time.perf_counter()
        for t in texts[:BATCH]:
            index.search_embeddings(encode_batch(model, "text", [t]), 10)
        return BATCH / (time.perf_counter() - start)

    def images_round() -> float:
        start = time.perf_counter()
        index.search_embeddings(encode_batch(model, "image", pils), 10)
        return len(pils) / (time.perf_counter() - start)

    out = {"torch_threads": 1, "batch": BATCH, "items": len(index),
           "text_qps": max(texts_round(True) for _ in range(rounds)),
           "text_encode_only_qps": max(texts_round(False) for _ in range(rounds)),
           "text_one_at_a_time_qps": max(one_at_a_time() for _ in range(rounds)),
           "image_qps": max(images_round() for _ in range(rounds))}
    out["mixed_qps"] = same_mix_qps(out["text_qps"], out["image_qps"])
    print(json.dumps({"raw": out}), flush=True)
    return out


def same_mix_qps(text_qps: float, image_qps: float, image_every: int = IMAGE_EVERY) -> float:
    """Raw queries/s for the servers' query mix (every ``image_every``-th an image): the batched text and
    image rates combined by the time each share of the mix takes."""
    image_share = 1.0 / image_every
    return 1.0 / ((1.0 - image_share) / text_qps + image_share / image_qps)


# ---------------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def servers(index_dir: Path, extra: list[str], n: int = 1) -> Iterator[tuple[list[str], list[int]]]:
    import httpx

    procs, urls = [], []
    for _ in range(n):
        port = free_port()
        procs.append(subprocess.Popen([EXE, "serve", "--index", str(index_dir), "--port", str(port), *extra],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url, proc in zip(urls, procs, strict=True):
            deadline = time.monotonic() + 300
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"modalign serve {' '.join(extra)} exited with {proc.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not start in 300 s")
                time.sleep(0.2)
        workers = int(extra[extra.index("--workers") + 1]) if "--workers" in extra else 0
        deadline = time.monotonic() + 300
        # a worker answers once it has loaded its encoders; all are up once each maps the shared vectors
        while workers and sum(mapped_shared(c) for p in procs for c in descendants(p.pid)) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {workers} workers did not start in 300 s")
            time.sleep(0.2)
        yield urls, [pid for proc in procs for pid in (proc.pid, *descendants(proc.pid))]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


class Queries:
    """Distinct text queries (a running number: never in the server's query cache), every 16th an image."""

    def __init__(self, words: list[str], images: list[bytes]) -> None:
        self.words, self.images, self.n = words, images, 0

    def take(self, count: int, images: bool = True) -> list[dict[str, Any]]:
        out = []
        for _ in range(count):
            i, self.n = self.n, self.n + 1
            if images and i % IMAGE_EVERY == IMAGE_EVERY - 1:
                out.append({"files": {"file": ("q.png", self.images[i % len(self.images)], "image/png")},
                            "data": {"k": "10"}})
            else:
                out.append({"json": {"text": f"{self.words[i % len(self.words)]} {i}", "k": 10}})
        return out


def descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, theirs, and so on (Linux /proc)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            out += [int(child), *descendants(int(child))]
    return out


def mapped_shared(pid: int) -> bool:
    """Whether ``pid`` maps a ``serve --workers`` shared-vectors file."""
    return "modalign-serve-" in Path(f"/proc/{pid}/maps").read_text()


def proc_kb_field_mb(pids: list[int], file: str, field: str) -> float:
    """``field`` (a kB line of /proc/PID/``file``) summed over ``pids``, in MiB."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field + ":"):
                total += int(line.split()[1])
    return total / 1024


def pss_mb(pids: list[int]) -> float:
    """Proportional set size of ``pids`` together (a page shared by k processes counts 1/k to each), MiB."""
    return proc_kb_field_mb(pids, "smaps_rollup", "Pss")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(urls: list[str], payloads: list[dict[str, Any]], concurrency: int,
               server_pids: list[int] | None = None) -> dict[str, Any]:
    """Send ``payloads`` from ``concurrency`` client loops; latencies, and the CPU time the clients (this
    process) and the servers spent per request, which says where the 2 cores went."""
    import httpx

    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)
    text_lat: list[float] = []
    image_lat: list[float] = []
    errors: list[str] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            payload = queue.get_nowait()
            start = time.perf_counter()
            try:
                r = await client.post("/search", **payload)
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:120]}")
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
            (image_lat if "files" in payload else text_lat).append(time.perf_counter() - start)

    # one connection pool per POOL client loops, pools spread over the urls: httpx's pool costs the load
    # generator CPU per request that grows with its size (32 connections in one pool: ~11 ms of client CPU
    # per query against ~8 ms in two pools of 16), and the client shares the 2 cores with the server
    pools = max(len(urls), -(-concurrency // POOL))
    limits = httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL)
    clients = [httpx.AsyncClient(base_url=urls[i % len(urls)], timeout=120, limits=limits) for i in range(pools)]
    pids = server_pids or []
    server_cpu0, client_cpu0 = sum(cpu_seconds(p) for p in pids), time.process_time()
    start = time.perf_counter()
    try:
        await asyncio.gather(*(worker(clients[w % len(clients)]) for w in range(concurrency)))
    finally:
        wall = time.perf_counter() - start
        client_cpu = time.process_time() - client_cpu0
        server_cpu = sum(cpu_seconds(p) for p in pids) - server_cpu0
        for c in clients:
            await c.aclose()
    every = np.asarray(text_lat + image_lat) * 1000
    return {"clients": concurrency, "requests": len(payloads), "qps": len(payloads) / wall,
            "p50_ms": float(np.percentile(every, 50)), "p99_ms": float(np.percentile(every, 99)),
            "text_p50_ms": float(np.percentile(text_lat, 50)) * 1000 if text_lat else None,
            "image_p50_ms": float(np.percentile(image_lat, 50)) * 1000 if image_lat else None,
            "images": len(image_lat), "errors": len(errors), "first_errors": errors[:3],
            "client_cpu_ms_per_request": client_cpu / len(payloads) * 1000,
            "server_cpu_ms_per_request": server_cpu / len(payloads) * 1000 if pids else None,
            "cpu_busy": (client_cpu + server_cpu) / (wall * (os.cpu_count() or 1))}


VARIANTS = {"before (--max-batch 1)": (["--max-batch", "1"], 1),
            "after (micro-batching)": ([], 1),
            "--workers 2 (one port)": (["--workers", "2"], 1),
            "2 processes (two ports)": ([], 2)}


def bench_server(index_dir: Path, queries: Queries, requests_per_client: int,
                 variants: list[str] | None = None) -> dict[str, Any]:
    order = variants or list(VARIANTS)
    rounds: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in order}
    for r in range(2):
        for name in order if r == 0 else order[::-1]:  # ABBA: a slow spell of the machine hits all alike
            extra, n_proc = VARIANTS[name]
            with servers(index_dir, extra, n_proc) as (urls, pids):
                asyncio.run(load(urls, queries.take(48), 8))  # warm-up: encoders, threads, connections
                runs = []
                for clients in CLIENTS:
                    n = max(160, requests_per_client * clients)
                    runs.append(asyncio.run(load(urls, queries.take(n), clients, pids)))
                    print(json.dumps({"variant": name, "round": r, **runs[-1]}), flush=True)
                # text queries only, comparable with the raw text rate
                n = max(160, requests_per_client * CLIENTS[-1])
                runs.append({**asyncio.run(load(urls, queries.take(n, images=False), CLIENTS[-1], pids)),
                             "text_only": True, "pss_mb": pss_mb(pids), "processes": len(pids)})
                print(json.dumps({"variant": name, "round": r, **runs[-1]}), flush=True)
                rounds[name].append(runs)
    best = {name: [max((rs[i] for rs in runs), key=lambda x: x["qps"]) for i in range(len(CLIENTS) + 1)]
            for name, runs in rounds.items()}
    return {"best": best, "rounds": rounds, "image_every": IMAGE_EVERY}


# ---------------------------------------------------------------------------------------------- report
def markdown(results: dict[str, Any]) -> str:
    lines = []
    raw = results.get("raw")
    if raw:
        mixed = same_mix_qps(raw["text_qps"], raw["image_qps"])
        lines.append(f"Raw, one torch thread, {raw['items']}-item emoji index: {raw['text_qps']:.0f} text queries/s "
                     f"encoded {raw['batch']} at a time and searched as one batch (encoder alone "
                     f"{raw['text_encode_only_qps']:.0f}/s; one at a time {raw['text_one_at_a_time_qps']:.0f}/s); "
                     f"images {raw['image_qps']:.0f}/s; the servers' mix (every "
                     f"{IMAGE_EVERY}th query an image) {mixed:.0f}/s.\n")
    server = results.get("server")
    if server:
        lines += ["| server | clients | queries | queries/s | × raw (same queries) | p50 ms | p99 ms | errors | "
                  "server CPU ms/query | client CPU ms/query | cores busy |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, runs in server["best"].items():
            for run in runs:
                text_only = run.get("text_only", False)
                # against the raw rate of the same queries: text alone, or the mix with images
                ratio = f"{run['qps'] / (raw['text_qps'] if text_only else mixed):.2f}" if raw else "-"
                kind = "text only" if text_only else "mix"
                server_ms, client_ms, busy = (run.get(k) for k in ("server_cpu_ms_per_request",
                                                                   "client_cpu_ms_per_request", "cpu_busy"))
                cells = " | ".join(("" if server_ms is None else f"{server_ms:.1f}",
                                    "" if client_ms is None else f"{client_ms:.1f}",
                                    "" if busy is None else f"{busy:.0%}"))
                lines.append(f"| {name} | {run['clients']} | {kind} | {run['qps']:.0f} | {ratio} | "
                             f"{run['p50_ms']:.0f} | {run['p99_ms']:.0f} | {run['errors']} | {cells} |")
        lines.append(f"\n(mix: text queries, every {server['image_every']}th an image upload; text only: text queries; "
                     "better of two ABBA rounds)")
        memory = [f"{name} {runs[-1]['pss_mb']:.0f} MiB in {runs[-1]['processes']} processes"
                  for name, runs in server["best"].items() if "pss_mb" in runs[-1]]
        if memory:
            lines.append("\nMemory of the server processes after the text-only load (PSS: a page shared by k "
                         "processes counts 1/k to each): " + "; ".join(memory) + ".")
    demo = results.get("demo")
    if demo:
        lines.append("")
        for key in ("first", "rerun"):
            d = demo[key]
            lines.append(f"`modalign demo` {key}: {d['wall_s']:.0f} s, peak RSS {d['peak_rss_mb']:.0f} MiB "
                         f"(exit {d['exit_code']})")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/modalign-server-bench"))
    ap.add_argument("--limit", type=int, default=100, help="emoji concepts in the index (× 4 styles)")
    ap.add_argument("--parts", default="demo,raw,server")
    ap.add_argument("--requests-per-client", type=int, default=40)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="server variants, comma-separated names")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/server-results.json"))
    ap.add_argument("--markdown", type=Path, default=Path("benchmarks/server-results.md"))
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}
    if "demo" in parts:  # first: nothing of ours competes with it yet
        results["demo"] = bench_demo(args.work)
    index_dir = emoji_index(args.work, args.limit)
    words, images = query_texts(index_dir), image_bytes(args.work / "emoji" / "manifest.jsonl")
    if "raw" in parts:
        results["raw"] = bench_raw(index_dir, words, images)
    if "server" in parts:
        results["server"] = bench_server(index_dir, Queries(words, images), args.requests_per_client,
                                         args.variants.split(","))
    results["load_average_at_end"] = os.getloadavg()
    args.json.write_text(json.dumps(results, indent=2))
    args.markdown.write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
