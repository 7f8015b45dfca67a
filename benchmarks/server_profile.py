"""Where a search request's CPU time goes: a sampling profile of ``modalign serve`` under wrk.

    .venv/bin/python benchmarks/server_profile.py [--work DIR] [--connections 32] [-- SERVE ARGS...]

The emoji index of ``server_load.py`` is served by one process with the given ``serve`` arguments (none:
the defaults). wrk (``benchmarks/wrk/search.lua``, a distinct text query per request) holds 32 connections
open while py-spy samples every thread of the server 250 times a second (on-CPU samples only). Each sample
is put in one stage by its innermost frame that names one (``STAGES``, checked in order). A stage's CPU per
query is its share of the samples times the server's CPU time per query over the same window (from /proc).
The threads of onnxruntime's and torch's pools run no Python, so py-spy does not see them: the server CPU
time no sample accounts for is theirs, and is counted to the encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from server_load import LUA, cpu_seconds, emoji_index, query_words, servers  # the same index and helpers

RATE = 250
#: stage → substrings of a frame ("function (file:line)"); the first stage one of a sample's frames names,
#: innermost frame first, takes the sample
STAGES: dict[str, tuple[str, ...]] = {
    "encoding (tokenizer, encoder, head)": ("modalign/encoders/", "encode_batch", "onnxruntime", "torch/",
                                            "transformers/", "tokenizers", "modalign/align/"),
    "search (exact scan, calibration, merge)": ("modalign/search/backends", "Index.rank", "modalign/search/routing",
                                                "faiss", "numpy/"),
    # today's payload bytes; before them, one Hit and one pydantic model per result, dumped to JSON
    "result assembly + JSON encoding": ("modalign/server/payloads.py", "result_of", "_response", "model_dump_json",
                                        "Index._hit", "modalign/search/catalog.py", "modalign/search/sources.py",
                                        "Index.source_path", "item_url", "urllib/parse"),
    "JSON decoding": ("parse_json", "orjson", "json/decoder"),
    "validation (request model, limits)": ("pydantic", "model_validate"),
    "routing and middleware (Starlette, FastAPI)": ("starlette/", "fastapi/", "modalign/server/app.py"),
    # the event loop's own run (uvloop: socket reads and writes, the C HTTP parser's callbacks) shows as Runner.run
    "HTTP parsing and socket I/O (uvicorn, httptools, the event loop)": (
        "uvicorn/", "httptools", "h11", "uvloop", "asyncio/runners.py", "asyncio/base_events.py",
        "asyncio/selector_events.py", "selectors.py", "asyncio/events.py"),
    "queueing and dispatch (micro-batcher, threads)": ("modalign/server/batcher.py", "modalign/server/queries.py",
                                                       "concurrent/futures", "threading.py", "asyncio/", "queue.py"),
}
OTHER = "event loop and other"
POOLS = "encoder thread pools (native, unsampled)"


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, marks in STAGES.items():
            if any(mark in frame for mark in marks):
                return stage
    return OTHER


def profile(pid: int, seconds: float, out: Path) -> Counter[str]:
    subprocess.run(["py-spy", "record", "-p", str(pid), "-r", str(RATE), "-d", str(int(seconds)), "--format", "raw",
                    "--threads", "--nonblocking", "-o", str(out)], check=True, capture_output=True)
    counts: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")[1:]  # the first "frame" names the thread
        counts[stage_of(frames)] += int(n)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/modalign-server-bench"))
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/server-profile-results.json"))
    ap.add_argument("--markdown", type=Path, default=Path("benchmarks/server-profile-results.md"))
    ap.add_argument("serve_args", nargs="*", help="extra `modalign serve` arguments (after --)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    index_dir = emoji_index(args.work, args.limit)
    words_file = args.work / "words.txt"
    words_file.write_text("\n".join(query_words(index_dir)) + "\n")
    with servers(index_dir, args.serve_args) as (urls, pids):
        pid = pids[0]
        wrk_out: dict[str, Any] = {}
        length = args.seconds + 6

        def load() -> None:
            proc = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{length:g}s", "-s", str(LUA), urls[0]],
                                  capture_output=True, text=True, env={**os.environ, "WRK_WORDS": str(words_file)})
            wrk_out.update(json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("WRK "))[4:]))

        loader = threading.Thread(target=load)
        loader.start()
        time.sleep(3)  # past the warm-up of the connections
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        counts = profile(pid, args.seconds, args.work / "profile.txt")
        cpu, wall = cpu_seconds(pid) - cpu0, time.perf_counter() - t0
        loader.join()
    qps = wrk_out["requests"] / wrk_out["duration_s"]
    queries = qps * wall
    sampled_cpu = sum(counts.values()) / RATE
    per_query = {stage: n / RATE / queries * 1000 for stage, n in counts.items()}
    per_query[POOLS] = max(0.0, cpu - sampled_cpu) / queries * 1000
    results = {"serve_args": args.serve_args, "connections": args.connections, "qps": qps, "seconds": wall,
               "server_cpu_ms_per_query": cpu / queries * 1000, "samples": dict(counts),
               "cpu_ms_per_query_by_stage": per_query, "wrk": wrk_out, "date": time.strftime("%Y-%m-%d")}
    args.json.write_text(json.dumps(results, indent=2))
    total = cpu / queries * 1000
    lines = [f"`modalign serve {' '.join(args.serve_args)}` under wrk at {args.connections} connections: "
             f"{qps:.0f} queries/s, {total:.2f} ms of server CPU per query ({args.seconds:g} s of py-spy at "
             f"{RATE} Hz).\n", "| stage | CPU ms per query | share |", "|---|---:|---:|"]
    for stage, ms in sorted(per_query.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {stage} | {ms:.3f} | {ms / total:.0%} |")
    args.markdown.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
