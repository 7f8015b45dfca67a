"""Index stores at scale: build time, recall@10 against exact search and queries/s, for the local store
(exact and faiss HNSW), LanceDB (IVF_PQ + exact re-scoring) and Milvus Lite (HNSW), in one run.

Everything goes through ``modalign.search.Index`` (the code ``modalign serve`` runs), on the clustered
synthetic vectors of benchmarks/search.py (dim 256). Build = one ``apply`` of all n vectors (what
``modalign index`` does for a manifest): the vectors reach the store and its ANN index is built.
queries/s: one query at a time (the serving case), ``rank(k=10, routing=raw)``.

    .venv/bin/python benchmarks/stores.py --json benchmarks/stores-results.json --markdown benchmarks/stores-results.md
    .venv/bin/python benchmarks/stores.py --sizes 20000 --queries 50     # quick

The machine is shared and noisy: compare stores within one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from search import DIM, K, clustered, mixture, recall  # the shared synthetic data

STORES = ("local-exact", "local-hnsw", "lancedb", "milvus-lite")
DEFAULT_STORES = "local-exact,lancedb,milvus-lite"


def make_index(store: str, work: Path, n: int) -> Any:
    from modalign.search import Index
    from modalign.search.stores import LanceStore, MilvusStore

    if store == "local-exact":
        return Index(DIM)
    if store == "local-hnsw":
        return Index(DIM, backend="hnsw", backend_params={"m": 32, "ef_construction": 200, "ef_search": 128})
    if store == "lancedb":
        return Index(DIM, store=LanceStore(str(work / "lancedb"), "bench", DIM))
    return Index(DIM, store=MilvusStore(str(work / "milvus.db"), "bench", DIM))


def segment(X: np.ndarray) -> Any:
    from modalign.search import Segment

    ids = [f"v{i}" for i in range(len(X))]
    entries = [{"id": i, "modality": "vector", "kind": "vector", "key": i, "text": None, "path": None} for i in ids]
    rows = [{"id": i, "meta": {}, "items": {"vector": i}} for i in ids]
    return Segment(entries=entries, vectors=X, rows=rows)


def bench(n: int, n_queries: int, stores: list[str]) -> list[dict[str, Any]]:
    import faiss

    centers, sizes = mixture(n, DIM)
    X = clustered(n, DIM, 1, centers, sizes)
    Q = clustered(n_queries, DIM, 2, centers, sizes)
    flat = faiss.IndexFlatIP(DIM)
    flat.add(X)
    _, truth = flat.search(Q, K)
    seg = segment(X)
    rows = []
    for store in stores:
        work = Path(tempfile.mkdtemp(prefix=f"stores-{store}-"))
        try:
            index = make_index(store, work, n)
            start = time.perf_counter()
            index.apply(seg)
            build = time.perf_counter() - start
            index.rank(Q[:5], K, routing="raw")  # warm-up (Lance opens its index files lazily)
            found, start = [], time.perf_counter()
            for q in Q:
                r = index.rank(q[None], K, routing="raw")[0]
                found.append(np.pad(r.ids[:K], (0, K - len(r.ids[:K])), constant_values=-1))
            elapsed = time.perf_counter() - start
            backend = index.corpora["vector"].backend
            rows.append({"n": n, "dim": DIM, "store": store, "params": backend.config(), "build_s": build,
                         "queries": n_queries, "recall@10": recall(np.stack(found), truth),
                         "qps": n_queries / elapsed, "latency_ms": 1000 * elapsed / n_queries})
            print(json.dumps(rows[-1]), flush=True)
            index.close()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| vectors | store | build (s) | recall@10 | queries/s | latency (ms) |", "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['n']:,} | {r['store']} | {r['build_s']:.1f} | {r['recall@10']:.4f} | {r['qps']:.0f} | "
                   f"{r['latency_ms']:.2f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--stores", default=DEFAULT_STORES, help=f"comma-separated, of {', '.join(STORES)}")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    for n in (int(s) for s in args.sizes.split(",")):
        rows += bench(n, args.queries, args.stores.split(","))
        if args.json:  # after each size: a long run that is stopped keeps what it measured
            args.json.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
