"""Server throughput against the raw batched encoder, with wrk; the demo's wall time and peak RSS.

    .venv/bin/python benchmarks/server_load.py                        # everything (~15 min on 2 cores)
    .venv/bin/python benchmarks/server_load.py --parts raw,server     # skip the two demo runs

One run, in this order:

1. ``modalign demo --out WORK/demo`` twice: the first fills the feature cache unless it already holds
   the emoji features (the JSON says which it found), the second is the cached rerun. Peak RSS is the
   child's VmHWM, polled (ru_maxrss would carry this process's RSS over the fork).
2. A small emoji index (``--limit`` concepts × 4 styles, the default fit and encoders).
3. Raw: what a user would run instead of the server, the index's text encoder as they would call it:
   ``get_encoder("minilm").encode(texts, layers=[layer])`` on 640 distinct short texts in one call, torch
   with its default threads. Best of 3.
4. ``modalign serve`` as a real process on a free port, for each variant in turn (``VARIANTS``), under
   wrk (Debian's ``wrk``, compiled, one thread) with ``benchmarks/wrk/search.lua``: a distinct text query
   on every request, never in the server's query cache, at 1, 8 and 32 connections, after a warm-up.
   Per setting: queries/s and its ratio to the raw rate, p50 and p99, errors (socket errors and non-2xx),
   the CPU time of the server processes and of wrk per query, and the servers' PSS after the load. Two
   rounds in ABBA order; the better round of each setting is reported (both are in the JSON).

wrk runs on the same 2 cores as the server, so the server rows are a floor.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

EXE = str(Path(sys.executable).parent / "modalign")
LUA = Path(__file__).with_name("wrk") / "search.lua"
CONNECTIONS = (1, 8, 32)
RAW_TEXTS = 640
#: server variants: name → extra ``modalign serve`` arguments
VARIANTS: dict[str, list[str]] = {
    "one process (defaults)": [],
    "--workers 2": ["--workers", "2"],
    "--max-batch 1 (one request at a time)": ["--max-batch", "1"],
    "--runtime index (torch as indexed)": ["--runtime", "index"],
    "--runtime text=onnx-int8": ["--runtime", "text=onnx-int8"],
}


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

def query_words(index_dir: Path) -> list[str]:
    from modalign.search import Index

    index = Index.open(index_dir)
    words = {k for row in index.catalog.rows.values() for k in row["meta"].get("meta_keywords", [])}
    words |= {t for t in index.catalog.text if t}
    return sorted(w for w in words if "\n" not in w)


# ---------------------------------------------------------------------------------------------- raw
def bench_raw(index_dir: Path, words: list[str], rounds: int = 3) -> dict[str, Any]:
    """The index's text encoder as a user calls it: one ``encode`` of 640 distinct texts, default threads."""
    import torch

    from modalign.encoders import get_encoder
    from modalign.search import Index

    branch = Index.open(index_dir).model.branches["text"]
    encoder = get_encoder(branch.encoder, **branch.encoder_config)
    texts = [f"{words[i % len(words)]} raw {i}" for i in range(RAW_TEXTS)]
    encoder.encode(texts[:64], layers=[branch.layer])  # warm-up

    def once() -> float:
        start = time.perf_counter()
        encoder.encode(texts, layers=[branch.layer])
        return RAW_TEXTS / (time.perf_counter() - start)

    out = {"encoder": branch.encoder, "config": branch.encoder_config, "layer": branch.layer,
           "torch_threads": torch.get_num_threads(), "texts": RAW_TEXTS, "rounds": [once() for _ in range(rounds)]}
    out["qps"] = max(out["rounds"])
    print(json.dumps({"raw": out}), flush=True)
    return out


# ---------------------------------------------------------------------------------------------- server
def wrk(url: str, connections: int, seconds: float, words_file: Path, offset: int) -> dict[str, Any]:
    """One wrk run; its JSON summary line, and wrk's own CPU time (a child of this process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s", "-s", str(LUA),
                           url, "--", str(offset)], capture_output=True, text=True, check=True,
                          env={**os.environ, "WRK_WORDS": str(words_file)})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("WRK "))
    out = json.loads(line[4:])
    out["wrk_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out


def bench_variant(index_dir: Path, extra: list[str], words_file: Path, seconds: float,
                  offset: int) -> list[dict[str, Any]]:
    runs = []
    with servers(index_dir, extra) as (urls, pids):
        wrk(urls[0], 8, 3, words_file, offset)  # warm-up: encoders, threads, connections
        for i, connections in enumerate(CONNECTIONS):
            cpu0 = sum(cpu_seconds(p) for p in pids)
            run = wrk(urls[0], connections, seconds, words_file, offset + (i + 1) * 1_000_000)
            server_cpu = sum(cpu_seconds(p) for p in pids) - cpu0
            n = max(run["requests"], 1)
            run.update(connections=connections, qps=run["requests"] / run["duration_s"],
                       errors=run["socket_errors"] + run["non_2xx"],
                       server_cpu_ms_per_query=server_cpu / n * 1000, wrk_cpu_ms_per_query=run["wrk_cpu_s"] / n * 1000,
                       cores_busy=(server_cpu + run["wrk_cpu_s"]) / run["duration_s"])
            runs.append(run)
            print(json.dumps({"variant": extra, **run}), flush=True)
        runs[-1]["pss_mb"] = pss_mb(pids)
        runs[-1]["processes"] = len(pids)
    return runs


def bench_server(index_dir: Path, words: list[str], work: Path, seconds: float,
                 variants: list[str]) -> dict[str, Any]:
    words_file = work / "words.txt"
    words_file.write_text("\n".join(words) + "\n")
    rounds: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in variants}
    offset = 0
    for r in range(2):
        for name in variants if r == 0 else variants[::-1]:  # ABBA: a slow spell of the machine hits all alike
            offset += 10_000_000
            rounds[name].append(bench_variant(index_dir, VARIANTS[name], words_file, seconds, offset))
    best = {name: [max((rs[i] for rs in runs), key=lambda x: x["qps"]) for i in range(len(CONNECTIONS))]
            for name, runs in rounds.items()}
    for name, runs in rounds.items():  # memory: the larger of the two rounds
        best[name][-1] = {**best[name][-1], "pss_mb": max(rs[-1]["pss_mb"] for rs in runs)}
    return {"best": best, "rounds": rounds, "seconds": seconds, "tool": "wrk -t1, benchmarks/wrk/search.lua"}


# ---------------------------------------------------------------------------------------------- report
def markdown(results: dict[str, Any]) -> str:
    lines = []
    raw = results.get("raw")
    if raw:
        lines.append(f"Raw: `get_encoder({raw['encoder']!r}).encode(texts, layers=[{raw['layer']!r}])`, "
                     f"{raw['texts']} distinct short texts in one call, torch with its default "
                     f"{raw['torch_threads']} threads: **{raw['qps']:.0f} texts/s** (best of "
                     f"{len(raw['rounds'])}: {', '.join(f'{x:.0f}' for x in raw['rounds'])}).\n")
    server = results.get("server")
    if server:
        lines += ["| server | connections | queries/s | × raw | p50 ms | p99 ms | errors | server CPU ms/query | "
                  "wrk CPU ms/query | cores busy | PSS after the load |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, runs in server["best"].items():
            for run in runs:
                ratio = f"{run['qps'] / raw['qps']:.2f}" if raw else "-"
                pss = f"{run['pss_mb']:.0f} MiB ({run['processes']} proc.)" if "pss_mb" in run else ""
                lines.append(f"| {name} | {run['connections']} | {run['qps']:.0f} | {ratio} | {run['p50_ms']:.1f} | "
                             f"{run['p99_ms']:.1f} | {run['errors']} | {run['server_cpu_ms_per_query']:.2f} | "
                             f"{run['wrk_cpu_ms_per_query']:.2f} | {run['cores_busy']:.0%} | {pss} |")
        lines.append(f"\n({server['tool']}, {server['seconds']:g} s per setting after a warm-up; a distinct text "
                     "query per request; better of two ABBA rounds, both in the JSON)")
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
    ap.add_argument("--seconds", type=float, default=10.0, help="wrk duration per setting")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="server variants, comma-separated names")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/server-results.json"))
    ap.add_argument("--markdown", type=Path, default=Path("benchmarks/server-results.md"))
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(),
                               "date": time.strftime("%Y-%m-%d")}
    if "demo" in parts:  # first: nothing of ours competes with it yet
        results["demo"] = bench_demo(args.work)
    index_dir = emoji_index(args.work, args.limit)
    words = query_words(index_dir)
    if "raw" in parts:
        results["raw"] = bench_raw(index_dir, words)
    if "server" in parts:
        results["server"] = bench_server(index_dir, words, args.work, args.seconds, args.variants.split(","))
    results["load_average_at_end"] = os.getloadavg()
    args.json.write_text(json.dumps(results, indent=2))
    args.markdown.write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
