"""What ``serve --workers N`` costs in memory against N separate ``serve`` processes, on a large index.

    .venv/bin/python benchmarks/server_memory.py --rows 300000 --json benchmarks/server-memory-results.json \\
        --markdown benchmarks/server-memory-results.md

The emoji index of ``server_load.py`` (real model, real items) is copied and grown by ``--rows`` text
entries with random unit vectors in the model's space (encoding that many real items would take hours
on 2 cores; memory does not depend on what the vectors say). Then, each in turn on a free port:

- one ``serve`` process;
- ``serve --workers 2``: a supervisor and two workers on one port, the exact index's vectors written
  once to a temporary folder and memory-mapped by both;
- two separate ``serve`` processes, each loading its own copy (the way to scale before ``--workers``).

For each: the time until every process answers (``--workers``: until each worker maps the shared
vectors), and the memory of all its processes together as PSS
(a page shared by k processes counts 1/k to each, so shared vectors count once) and RSS (counts every
mapped page in every process). A few text queries check each variant returns the same hits.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from server_load import emoji_index, proc_kb_field_mb, pss_mb, servers  # the same index and process helpers

VARIANTS = {"1 process": ([], 1), "--workers 2 (one port)": (["--workers", "2"], 1),
            "2 processes (two ports)": ([], 2)}


def grown_index(index_dir: Path, out: Path, rows: int, seed: int = 0) -> Path:
    """``index_dir`` copied to ``out`` with ``rows`` more text entries (random unit vectors)."""
    from modalign.search import Index, Segment

    if (out / "index.json").is_file():
        return out
    shutil.copytree(index_dir, out)
    with Index.edit(out) as index:
        rng = np.random.default_rng(seed)
        vectors = rng.standard_normal((rows, index.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"synthetic-{i}" for i in range(rows)]
        entries = [{"id": i, "modality": "text", "kind": "text", "key": i, "text": i, "path": None} for i in ids]
        index.apply(Segment(entries=entries, vectors=vectors, rows=[{"id": i, "meta": {}, "items": {"text": i}}
                                                                    for i in ids]))
    return out


def rss_mb(pids: list[int]) -> float:
    return proc_kb_field_mb(pids, "status", "VmRSS")


def measure(index_dir: Path, queries: list[str]) -> dict[str, Any]:
    import httpx

    out: dict[str, Any] = {}
    for name, (extra, n) in VARIANTS.items():
        start = time.perf_counter()
        with servers(index_dir, extra, n) as (urls, pids):
            ready = time.perf_counter() - start
            hits = [[h["id"] for h in httpx.post(urls[0] + "/search", json={"text": q, "k": 5}, timeout=60)
                     .json()["results"]] for q in queries]
            out[name] = {"ready_s": ready, "processes": len(pids), "pss_mb": pss_mb(pids), "rss_mb": rss_mb(pids),
                         "pss_mb_each": [round(pss_mb([p])) for p in pids], "hits": hits}
        print(json.dumps({name: {k: v for k, v in out[name].items() if k != "hits"}}), flush=True)
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Index: {results['items']:,} items ({results['rows']:,} of them random unit vectors, dim "
             f"{results['dim']}, {results['vector_mb']:.0f} MiB of float32).\n",
             "| server | processes | ready in s | PSS MiB (all processes) | RSS MiB (all processes) | PSS MiB each |",
             "|---|---|---|---|---|---|"]
    for name, r in results["variants"].items():
        each = " + ".join(str(v) for v in r["pss_mb_each"])
        lines.append(f"| {name} | {r['processes']} | {r['ready_s']:.0f} | {r['pss_mb']:.0f} | {r['rss_mb']:.0f} | "
                     f"{each} |")
    lines.append(f"\nSame hits in every variant: {results['same_hits']}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/modalign-server-bench"))
    ap.add_argument("--limit", type=int, default=100, help="emoji concepts in the base index (× 4 styles)")
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/server-memory-results.json"))
    ap.add_argument("--markdown", type=Path, default=Path("benchmarks/server-memory-results.md"))
    args = ap.parse_args()
    from modalign.search import Index

    base = emoji_index(args.work, args.limit)
    index_dir = grown_index(base, args.work / f"index-{args.rows}", args.rows)
    index = Index.open(index_dir)
    queries = [t for t in index.catalog.text if t and not t.startswith("synthetic-")][:5]
    items, dim = len(index), index.dim
    del index
    variants = measure(index_dir, queries)
    same = len({json.dumps(v["hits"]) for v in variants.values()}) == 1
    results = {"rows": args.rows, "items": items, "dim": dim, "vector_mb": items * dim * 4 / 2**20,
               "variants": variants, "same_hits": same}
    args.json.write_text(json.dumps(results, indent=2))
    args.markdown.write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
