"""Adds batches of vectors to an index in a store, printing ``ACK <batch>`` once each add has returned.

Run by tests/test_stores.py, which kills it with SIGKILL in the middle of an add. "Acknowledged" means
the line was printed: ``Index.apply`` returned, so its commit (index.json) is on disk.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from modalign.align import load
from modalign.search import Index, Segment
from modalign.search.stores import new_store_record

BATCH = 1500


def batch(b: int, dim: int) -> Segment:
    vectors = np.random.default_rng(b).standard_normal((BATCH, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"crash-{b}-{i}" for i in range(BATCH)]
    entries = [{"id": i, "modality": "text", "kind": "vector", "key": i, "text": i, "path": None} for i in ids]
    rows = [{"id": f"row-{i}", "meta": {}, "items": {"text": i}} for i in ids]
    return Segment(entries=entries, vectors=vectors, rows=rows)


def main() -> None:
    folder, model_dir, kind, n_batches = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    model = load(model_dir)
    with Index.edit(folder, model=model, store=new_store_record(kind)) as index:
        for b in range(n_batches):
            index.apply(batch(b, model.dim))
            print(f"ACK {b}", flush=True)


if __name__ == "__main__":
    main()
