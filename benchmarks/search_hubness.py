"""Held-out R@1 through the search path with and without hubness re-scoring (CSLS, inverted softmax).

    .venv/bin/python benchmarks/search_hubness.py --cache /tmp/exp/cache --data-dir /tmp/exp/data [--dataset emoji]

The model: ``cca(reg=0.3, power=2)+l2`` (what auto picked at 5k emoji pairs) fitted on every training
pair (≤ 5k) of ``benchmarks/alignment.py``'s split. The held-out concepts' unique images and texts go
into one in-memory ``Index`` whose rows pair the items that share a manifest row; every query is then
searched against the other modality through ``Index.rank`` (none) or ``search.hubness.hubness_rank``.
The parameter is the papers' (k = 10, β = 30) or "auto": chosen by MRR on a seeded half of the index's
paired rows (``compute_stats``), the other half's queries then count as unseen.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import alignment as A

from modalign.align.fit import fit_arrays
from modalign.features import FeatureCache
from modalign.search import Index
from modalign.search.catalog import Segment
from modalign.search.hubness import compute_stats, hubness_rank


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="emoji")
    p.add_argument("--data-dir", default="data/bench")
    p.add_argument("--cache", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    spec = A.DATASETS[args.dataset]
    groups = spec.groups if hasattr(spec, "groups") else spec[2]  # type: ignore[index]
    prep = A.prepare(args.dataset, A.builtin_manifest(args.dataset, Path(args.data_dir)), groups,
                     FeatureCache(args.cache))
    rows = A.draw_pairs(len(prep.train_groups), "all", 0, A.MAX_PAIRS)
    layer = prep.default_layers
    fitted = fit_arrays({m: {layer[m]: prep.train_feats[m][layer[m]][rows]} for m in prep.modalities},
                        {m: x[rows] for m, x in prep.train_present.items()}, [prep.train_groups[i] for i in rows],
                        prep.modalities, default_layers=layer, method="cca", dim=256, val_fraction=0.0,
                        options={"reg": 0.3, "power": 2.0}, input_norm="l2")
    a, b = prep.modalities
    emb = {}
    with torch.no_grad():
        for m in (a, b):
            x = torch.as_tensor(prep.test[m]["features"][layer[m]])
            emb[m] = torch.nn.functional.normalize(fitted.heads[m](x), dim=1).numpy()
    ra, rb = prep.test[a]["row_to_item"], prep.test[b]["row_to_item"]
    index = Index.from_vectors({a: emb[a]})
    pairs = sorted({(int(i), int(j)) for i, j in zip(ra, rb, strict=True)})
    entries = [{"id": f"{b}-{j}", "modality": b, "kind": "vector", "key": f"{b}-{j}", "text": None, "path": None}
               for j in range(len(emb[b]))]
    # one row per (a item, b item) pair of a manifest row: what the index's pairing (and "auto") sees
    index_rows = [{"id": f"r{n}", "meta": {}, "items": {a: f"{a}-{i}", b: f"{b}-{j}"}}
                  for n, (i, j) in enumerate(pairs)]
    index.apply(Segment(entries=entries, vectors=emb[b], rows=index_rows))
    rel = np.zeros((len(emb[a]), len(emb[b])), bool)
    rel[ra, rb] = True
    pos = {m: np.flatnonzero(np.asarray(index.catalog.modality, dtype=object) == m) for m in (a, b)}
    item_of = {m: {int(p): i for i, p in enumerate(pos[m])} for m in (a, b)}

    def r_at_1(qm: str, tm: str, ranked: list) -> float:
        r = rel if qm == a else rel.T
        return float(np.mean([r[i, item_of[tm][int(x.ids[0])]] for i, x in enumerate(ranked)]))

    print(f"# {args.dataset} held-out: {len(emb[a])} {a} and {len(emb[b])} {b} items; model cca(0.3,2)+l2 on "
          f"{len(rows)} pairs; R@1 through the search path")
    print(f"| re-scoring | parameter | {a}→{b} R@1 | {b}→{a} R@1 | chosen on |")
    print("|---|---|---|---|---|")
    plain = {qm: index.rank(emb[qm], k=1, target_modalities=[tm], routing="raw", query_modality=qm)
             for qm, tm in ((a, b), (b, a))}
    print(f"| none | – | {r_at_1(a, b, plain[a]):.3f} | {r_at_1(b, a, plain[b]):.3f} | – |", flush=True)
    for method, value in (("csls", 10), ("csls", "auto"), ("isoftmax", 30.0), ("isoftmax", "auto")):
        stats = compute_stats(index, method, value)
        got = {qm: hubness_rank(index, stats, emb[qm], qm, k=1, target_modalities=[tm]) for qm, tm in ((a, b), (b, a))}
        print(f"| {method} | {'k' if method == 'csls' else 'β'}={stats.value:g} | "
              f"{r_at_1(a, b, got[a]):.3f} | {r_at_1(b, a, got[b]):.3f} | {stats.chosen_on} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
