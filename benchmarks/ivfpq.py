"""IVF-PQ at 1M vectors in bounded memory: build time, peak RSS, index size, recall@10 and QPS.

    .venv/bin/python benchmarks/ivfpq.py [--n 1000000] [--dim 256] [--oversample 1,4,10] [--json out.json]

The corpus (clustered unit vectors, Zipf-sized clusters sharing a mean direction, like real
embeddings) is written to a raw float32 file chunk by chunk; a child process then builds the
``ivfpq`` backend the way ``modalign`` does: train on a sample (the first ``train_size`` rows — the
file is in random order), then add ``chunk`` rows at a time read with plain file reads, so the
process never holds more than the codes + one chunk. Its peak RSS (``ru_maxrss``) is reported.
Recall@10 is against exact inner-product search over the whole file (streamed too), for each
``nprobe`` and ``oversample``: k · oversample PQ candidates re-scored exactly by
``modalign.search.rerank.rerank`` from the memory-mapped file (1 = the PQ order, no re-rank).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

K = 10
CHUNK = 65_536
TRUTH_CHUNK = 16_384  # exact search block: bounds the (queries × block) score matrix


def centres(dim: int, n_centres: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    offset = rng.standard_normal(dim).astype(np.float32)
    c = rng.standard_normal((n_centres, dim)).astype(np.float32) + 0.8 * offset
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    p = 1.0 / np.arange(1, n_centres + 1) ** 0.7
    return c, p / p.sum()


def block(n: int, dim: int, seed: int, c: np.ndarray, p: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = rng.choice(len(c), size=n, p=p)
    spread = 0.35 + 0.3 * np.random.default_rng(1).random(len(c)).astype(np.float32)
    x = c[lab] + spread[lab, None] * rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def read_rows(path: Path, dim: int, start: int, count: int) -> np.ndarray:
    return np.fromfile(path, dtype=np.float32, count=count * dim, offset=start * dim * 4).reshape(-1, dim)


def write_corpus(path: Path, n: int, dim: int) -> None:
    c, p = centres(dim, max(64, int(4 * np.sqrt(n))))
    with path.open("wb") as fh:
        for i, start in enumerate(range(0, n, CHUNK)):
            fh.write(block(min(CHUNK, n - start), dim, 1000 + i, c, p).tobytes())


def exact_top(path: Path, n: int, dim: int, queries: np.ndarray) -> np.ndarray:
    best_s = np.full((len(queries), K), -np.inf, np.float32)
    best_i = np.zeros((len(queries), K), np.int64)
    for start in range(0, n, TRUTH_CHUNK):
        s = queries @ read_rows(path, dim, start, TRUTH_CHUNK).T
        all_s = np.concatenate([best_s, s], axis=1)
        all_i = np.concatenate([best_i, np.arange(start, start + s.shape[1])[None].repeat(len(queries), 0)], axis=1)
        top = np.argpartition(-all_s, K, axis=1)[:, :K]
        best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    return np.take_along_axis(best_i, np.argsort(-best_s, axis=1), 1)  # best first


def peak_rss_mb() -> float:
    """VmHWM of this process (ru_maxrss would carry the parent's peak over the exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(args: argparse.Namespace) -> None:
    """Child process: build from the file, save, report build time / RSS / search numbers as JSON."""
    from modalign.search.backends import BACKENDS
    from modalign.search.rerank import rerank

    path, n, dim = Path(args.corpus), args.n, args.dim
    import faiss  # noqa: F401  (loaded before the baseline RSS)

    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    backend = BACKENDS.create("ivfpq", dim=dim, nlist=args.nlist, m=args.m, nprobe=16)
    backend.train(read_rows(path, dim, 0, args.train_size), expected=n)
    t_train = time.perf_counter() - t0
    for start in range(0, n, CHUNK):
        rows = read_rows(path, dim, start, CHUNK)
        backend.add(rows, np.arange(start, start + len(rows), dtype=np.int64))
    t_build = time.perf_counter() - t0
    rss = peak_rss_mb()
    out_file = path.with_suffix(".faiss")
    backend.save(out_file)
    queries = np.load(args.queries)
    truth = np.load(args.truth)
    # re-rank reads candidate rows straight from the corpus file, as the Index reads its own array
    vectors = np.memmap(path, dtype=np.float32, mode="r", shape=(n, dim))
    search = []
    for nprobe in (8, 16, 32, 64):
        backend.nprobe = nprobe
        backend._apply_search_params()
        for oversample in args.oversample:
            in_rerank = [0.0]  # seconds spent in the re-rank itself (its share of each timing)

            def top(q: np.ndarray, oversample: int = oversample, in_rerank: list[float] = in_rerank) -> np.ndarray:
                found = backend.search(q, K * oversample)[1]
                if oversample <= 1:
                    return found
                t = time.perf_counter()
                found = rerank(q, found, vectors, K)[1]
                in_rerank[0] += time.perf_counter() - t
                return found

            top(queries[:10])  # warm-up
            in_rerank[0] = 0.0
            t = time.perf_counter()
            found = top(queries)
            wall, rerank_batch = time.perf_counter() - t, in_rerank[0]
            in_rerank[0] = 0.0
            t = time.perf_counter()
            for q in queries[:100]:  # one query per call, as the server does
                top(q[None])
            single, rerank_single = (time.perf_counter() - t) / 100, in_rerank[0] / 100
            recall = float(np.mean([len(set(f) & set(g)) / K for f, g in zip(found, truth, strict=True)]))
            top1 = float(np.mean([g[0] in f for f, g in zip(found, truth, strict=True)]))
            search.append({"nprobe": nprobe, "oversample": oversample, "recall@10": recall, "1-recall@10": top1,
                           "qps_batch": len(queries) / wall, "rerank_share_batch": rerank_batch / wall,
                           "ms_per_single_query": 1000 * single, "rerank_ms_per_single_query": 1000 * rerank_single})
    print(json.dumps({"n": n, "dim": dim, "nlist": backend._index.nlist, "m": backend.code_bytes(),
                      "train_rows": args.train_size, "train_s": t_train, "build_s": t_build,
                      "peak_rss_mb": rss, "rss_after_imports_mb": rss0,
                      "vectors_mb": n * dim * 4 / 2**20, "index_file_mb": out_file.stat().st_size / 2**20,
                      "search": search}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--m", type=int, default=None, help="bytes per vector (default min(128, dim/2))")
    ap.add_argument("--train-size", type=int, default=65_536)
    ap.add_argument("--queries-n", type=int, default=500)
    ap.add_argument("--oversample", type=lambda v: [int(x) for x in v.split(",")], default=[1, 4, 10],
                    help="candidates fetched per result, re-ranked exactly (1 = no re-rank)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--queries", help=argparse.SUPPRESS)
    ap.add_argument("--truth", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build:
        build(args)
        return
    with tempfile.TemporaryDirectory(prefix="modalign-ivfpq-") as tmp:
        corpus = Path(tmp) / "corpus.f32"
        t0 = time.perf_counter()
        write_corpus(corpus, args.n, args.dim)
        c, p = centres(args.dim, max(64, int(4 * np.sqrt(args.n))))
        queries = block(args.queries_n, args.dim, 7, c, p)
        truth = exact_top(corpus, args.n, args.dim, queries)
        np.save(Path(tmp) / "q.npy", queries)
        np.save(Path(tmp) / "t.npy", truth)
        prep = time.perf_counter() - t0
        cmd = [sys.executable, __file__, "--build", "--n", str(args.n), "--dim", str(args.dim), "--nlist",
               str(args.nlist), "--train-size", str(args.train_size), "--corpus", str(corpus),
               "--queries", str(Path(tmp) / "q.npy"), "--truth", str(Path(tmp) / "t.npy")]
        if args.m:
            cmd += ["--m", str(args.m)]
        cmd += ["--oversample", ",".join(map(str, args.oversample))]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(proc.stderr)
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        result["prepare_s"] = prep
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
