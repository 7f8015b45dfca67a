"""Search benchmark: exact vs faiss HNSW/IVF (QPS, recall@10, overhead over calling faiss directly) on
synthetic clustered vectors, then end-to-end latency and a load test through the HTTP API.

    .venv/bin/python benchmarks/search.py                         # 10k, 100k, 1M vectors + API on emoji
    .venv/bin/python benchmarks/search.py --sizes 10000 --no-api  # quick

"Direct faiss" calls ``search`` on the very faiss structure our backend built (same vectors, same graph
or cells), so the ratio is exactly what modalign adds: id filtering, routing, result assembly.
For exact search the baseline is ``faiss.IndexFlatIP`` on the same vectors.
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
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DIM = 256
K = 10


# ---------------------------------------------------------------------------------------------- data
def clustered(n: int, dim: int, seed: int, centers: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Unit vectors from a Gaussian mixture: Zipf-sized clusters, per-cluster spread, a shared offset
    (real embedding spaces are anisotropic: all vectors share a mean direction)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(centers), size=n, p=sizes)
    spread = 0.35 + 0.3 * np.random.default_rng(1).random(len(centers)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        lab = labels[start : start + 100_000]
        noise = rng.standard_normal((len(lab), dim), dtype=np.float32) / np.sqrt(dim)
        block = centers[lab] + spread[lab, None] * noise
        out[start : start + len(lab)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def mixture(n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n_centers = max(64, int(4 * np.sqrt(n)))
    offset = rng.standard_normal(dim).astype(np.float32)
    centers = rng.standard_normal((n_centers, dim)).astype(np.float32) + 0.8 * offset
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    sizes = 1.0 / np.arange(1, n_centers + 1) ** 0.7
    return centers, sizes / sizes.sum()


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


# ---------------------------------------------------------------------------------------------- vectors
def bench_vectors(n: int, n_queries: int, single: int, backends: list[str], repeat: int,
                  params_for: Callable[[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    import faiss

    from modalign.search import Index

    centers, sizes = mixture(n, DIM)
    X = clustered(n, DIM, 1, centers, sizes)
    Q = clustered(n_queries, DIM, 2, centers, sizes)
    flat = faiss.IndexFlatIP(DIM)
    flat.add(X)
    _, truth = flat.search(Q, K)
    rows = []
    for name in backends:
        params = params_for(name, n)
        start = time.perf_counter()
        index = Index.from_vectors({"vector": X}, backend=name, backend_params=params)
        build = time.perf_counter() - start
        backend = index.corpora["vector"].backend
        if name == "exact":
            direct = flat
        elif name == "hnsw":
            direct = faiss.downcast_index(backend._index.index)  # the graph under our id map
        else:
            direct = backend._index

        def ours_batch(index: Index = index) -> list[Any]:
            return index.rank(Q, K, routing="raw")

        def faiss_batch(direct: Any = direct) -> Any:
            return direct.search(Q, K)

        ours_batch(), faiss_batch()  # warm-up
        best = {"ours_batch": 1e9, "faiss_batch": 1e9}
        for _ in range(repeat):  # interleaved, so load changes hit both sides alike
            best["ours_batch"] = min(best["ours_batch"], best_of(ours_batch, 1))
            best["faiss_batch"] = min(best["faiss_batch"], best_of(faiss_batch, 1))
        # one query at a time: per query, the best of `repeat` back-to-back runs of each side
        # (a contended machine preempts at random; the minimum is the undisturbed cost)
        ours_t, faiss_t = 0.0, 0.0
        for q in Q[:single]:
            q1 = q[None]
            o, f = [], []
            for r in range(repeat):
                # alternate who goes first: the second run of a query finds its data in the CPU caches
                for side in ((0, 1) if r % 2 else (1, 0)):
                    start = time.perf_counter()
                    index.rank(q1, K, routing="raw") if side == 0 else direct.search(q1, K)
                    (o if side == 0 else f).append(time.perf_counter() - start)
            ours_t, faiss_t = ours_t + min(o), faiss_t + min(f)
        best["ours_single"], best["faiss_single"] = ours_t, faiss_t
        # the library call a user makes: search + Hit objects (ids, captions, rows, metadata)
        hits_time = 0.0
        for q in Q[:single]:
            times = []
            for _ in range(2):
                start = time.perf_counter()
                index.search(q, k=K, routing="raw")
                times.append(time.perf_counter() - start)
            hits_time += min(times)
        found = np.stack([r.ids[:K] if len(r.ids) >= K else np.pad(r.ids, (0, K - len(r.ids)), constant_values=-1)
                          for r in ours_batch()])
        rows.append({
            "n": n, "backend": name, "params": backend.config(), "build_s": build, "queries": n_queries,
            "single": single, "repeat": repeat,
            "recall@10": recall(found, truth), "recall@10_faiss": recall(faiss_batch()[1], truth),
            "qps_batch": n_queries / best["ours_batch"], "qps_batch_faiss": n_queries / best["faiss_batch"],
            "ratio_batch": best["ours_batch"] / best["faiss_batch"],
            "latency_ms": 1000 * best["ours_single"] / single, "latency_ms_faiss": 1000 * best["faiss_single"] / single,
            "ratio_single": best["ours_single"] / best["faiss_single"],
            "latency_ms_with_hits": 1000 * hits_time / single,
        })
        print(json.dumps(rows[-1]), flush=True)
        del index, direct
    return rows


# ---------------------------------------------------------------------------------------------- API
def emoji_index(work: Path, limit: int) -> Path:
    """Prepare emoji, fit image/text, index (each step skipped when its output exists)."""
    exe = str(Path(sys.executable).parent / "modalign")
    data, model, index, cache = work / "emoji", work / "model", work / "index", work / "cache"
    if not (data / "manifest.jsonl").exists():
        subprocess.run([exe, "datasets", "prepare", "emoji", "--out", str(data), "--limit", str(limit)], check=True)
    if not (model / "config.json").exists():
        subprocess.run([exe, "fit", "--data", str(data / "manifest.jsonl"), "--modalities", "image,text",
                        "--holdout", "0.2", "--cache", str(cache), "--out", str(model)], check=True)
    if not (index / "index.json").exists():
        subprocess.run([exe, "index", "--model", str(model), "--data", str(data / "manifest.jsonl"),
                        "--out", str(index), "--cache", str(cache)], check=True)
    return index


@contextlib.contextmanager
def server(index_dir: Path) -> Iterator[str]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).parent / "modalign"), "serve", "--index", str(index_dir),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def percentiles(values: list[float]) -> dict[str, float]:
    p50, p99 = np.percentile(values, [50, 99]) * 1000
    return {"n": len(values), "p50_ms": float(p50), "p99_ms": float(p99), "mean_ms": float(np.mean(values) * 1000)}


async def load(url: str, payloads: list[dict], concurrency: int) -> tuple[list[float], int, float]:
    import httpx

    queue: asyncio.Queue[dict] = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)
    latencies: list[float] = []
    errors = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while not queue.empty():
            payload = queue.get_nowait()
            start = time.perf_counter()
            try:
                r = await client.post("/search", json=payload)
                errors += r.status_code != 200
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=concurrency)) as c:
        await asyncio.gather(*(worker(c) for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - start


def bench_api(index_dir: Path, n_requests: int, concurrency: int) -> dict[str, Any]:
    import httpx

    from modalign.search import Index

    index = Index.open(index_dir)
    rows = [r for p in index.catalog.rows.values() for r in [p]]
    texts = sorted({index.catalog.text[p] for r in rows for p in r["items"].values() if index.catalog.text[p]})
    keywords = sorted({k for r in rows for k in r["meta"].get("meta_keywords", [])} - set(texts))
    images = [p for p in index.catalog.path if p][:30]
    ids = [index.catalog.entry_ids[p] for p in range(len(index.catalog)) if index.catalog.kind[p] == "image"]
    out: dict[str, Any] = {"items": len(index), "counts": index.counts()}

    import torch

    torch.set_num_threads(1)  # as `modalign serve` does
    index.embed_query("warm up")
    index.embed_query(Path(images[0]))
    lib = []
    for q in keywords[:100]:
        start = time.perf_counter()
        index.search(f"{q} ", k=10)  # a space: not in the query cache
        lib.append(time.perf_counter() - start)
    out["library_text"] = percentiles(lib)
    with server(index_dir) as url, httpx.Client(base_url=url, timeout=120) as client:
        client.post("/search", json={"text": "warm up", "k": 1})
        client.post("/search", files={"file": ("q.png", Path(images[0]).read_bytes(), "image/png")}, data={"k": "1"})
        for name, requests in (
            ("api_text", [{"json": {"text": q, "k": 10}} for q in keywords[:100]]),
            ("api_image", [{"files": {"file": ("q.png", Path(p).read_bytes(), "image/png")}, "data": {"k": "10"}}
                           for p in images]),
            ("api_id", [{"json": {"id": i, "k": 10}} for i in ids[:200]]),
        ):
            lat = []
            for kwargs in requests:
                start = time.perf_counter()
                r = client.post("/search", **kwargs)
                lat.append(time.perf_counter() - start)
                assert r.status_code == 200, r.text
            out[name] = percentiles(lat)
        payloads = []
        for i in range(n_requests):
            kind = i % 4
            if kind == 0:
                payloads.append({"id": ids[i % len(ids)], "k": 10})
            elif kind == 1:
                payloads.append({"text": texts[i % len(texts)], "k": 10, "modalities": ["image"]})
            else:
                payloads.append({"text": f"{keywords[i % len(keywords)]} {i}", "k": 20})
        latencies, errors, wall = asyncio.run(load(url, payloads, concurrency))
        out["load"] = {**percentiles(latencies), "errors": errors, "concurrency": concurrency,
                       "req_per_s": n_requests / wall}
    print(json.dumps(out), flush=True)
    return out


def markdown(vec: list[dict[str, Any]], api: dict[str, Any] | None) -> str:
    lines = ["| n | backend | build s | recall@10 | QPS (batch) | faiss QPS | ratio | 1-query ms | faiss ms | ratio "
             "| ms with hits |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in vec:
        lines.append(f"| {r['n']:,} | {r['backend']} | {r['build_s']:.1f} | {r['recall@10']:.3f} | "
                     f"{r['qps_batch']:,.0f} | {r['qps_batch_faiss']:,.0f} | {r['ratio_batch']:.2f} | "
                     f"{r['latency_ms']:.3f} | {r['latency_ms_faiss']:.3f} | {r['ratio_single']:.2f} | "
                     f"{r['latency_ms_with_hits']:.3f} |")
    if api:
        lines += ["", "| path | n | p50 ms | p99 ms |", "|---|---|---|---|"]
        for key in ("library_text", "api_text", "api_image", "api_id", "load"):
            v = api[key]
            lines.append(f"| {key} | {v['n']} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} |")
        ld = api["load"]
        lines.append(f"\nload: {ld['n']} requests, {ld['concurrency']} concurrent, {ld['errors']} errors, "
                     f"{ld['req_per_s']:.0f} req/s")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--backends", default="exact,hnsw,ivf")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    ap.add_argument("--repeat", type=int, default=5, help="timing repetitions (the best is kept)")
    ap.add_argument("--threads", type=int, default=0, help="faiss/BLAS threads (0: library default)")
    ap.add_argument("--large", type=int, default=1_000_000,
                    help="from this size on: 1/5 of the queries, 1/10 single ones, 3 repeats (a 2-core machine "
                         "needs minutes per pass over 1M vectors)")
    ap.add_argument("--hnsw-max-n", type=int, default=100_000,
                    help="skip HNSW above this size (building a 1M graph takes over 30 min on 2 cores)")
    ap.add_argument("--ivf-nprobe", type=int, default=32)
    ap.add_argument("--ivf-nlist-large", type=int, default=1024,
                    help="IVF cells at --large sizes (the default 4·√n = 4,000 cells takes >10 min to train here)")
    ap.add_argument("--no-api", action="store_true")
    ap.add_argument("--index", type=Path, help="index for the API part (default: built from emoji)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/modalign-bench"))
    ap.add_argument("--emoji-limit", type=int, default=150)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--json", type=Path, help="write all numbers here")
    args = ap.parse_args()
    if args.threads:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    def params_for(backend: str, n: int) -> dict[str, Any]:
        if backend != "ivf":
            return {}
        return {"nprobe": args.ivf_nprobe, **({"nlist": args.ivf_nlist_large} if n >= args.large else {})}

    vec = []
    for n in (int(s) for s in args.sizes.split(",") if s):
        backends = [b for b in args.backends.split(",") if b != "hnsw" or n <= args.hnsw_max_n]
        if n >= args.large:
            work = (max(50, args.queries // 5), max(10, args.single // 10), min(args.repeat, 3))
        else:
            work = (args.queries, args.single, args.repeat)
        vec += bench_vectors(n, work[0], work[1], backends, work[2], params_for)
    api = None
    if not args.no_api:
        api = bench_api(args.index or emoji_index(args.work, args.emoji_limit), args.requests, args.concurrency)
    print(markdown(vec, api))
    if args.json:
        args.json.write_text(json.dumps({"vectors": vec, "api": api}, indent=1))


if __name__ == "__main__":
    main()
