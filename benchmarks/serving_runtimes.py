"""Held-out R@1 moved by the runtime a server encodes its queries in (``serve --runtime``).

    .venv/bin/python benchmarks/serving_runtimes.py [--manifest emoji/manifest.jsonl] [--splits 3]

An index keeps the embeddings its items got from the fit's encoders (torch); ``serve --runtime`` changes
only how the queries are encoded. Per seeded split (20 % of the emoji concepts held out), the default fit
(auto) is trained on torch features of the other concepts; the held-out items are embedded in torch (the
index) and in each runtime, and scored both ways:

- served: queries in the runtime, items as indexed (torch): what ``modalign serve --runtime X`` answers;
- consistent: queries and items both in the runtime: an index rebuilt with that runtime.

Reported: R@1 (mean of text→image and image→text), and its difference to all-torch, mean ± std over splits.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from alignment import keep_groups  # the same seeded choice of groups as the alignment benchmark

from modalign import fit
from modalign.data.dataset import PairedDataset
from modalign.evaluation.evaluate import evaluate_detailed
from modalign.evaluation.retrieval import first_positive_ranks, metrics_from_ranks
from modalign.features import FeatureCache

RUNTIMES = ("torch", "onnx", "onnx-int8")
DIRECTIONS = ("text->image", "image->text")


def served_r1(indexed: Any, queries: Any) -> float:
    """Mean R@1 of both directions: query embeddings from ``queries``, gallery from ``indexed``."""
    out = []
    for direction in DIRECTIONS:
        d = indexed.directions[direction]
        q = queries.embeddings[d.query].embeddings[d.query_items]
        g = indexed.embeddings[d.target].embeddings[d.gallery_items]
        out.append(metrics_from_ranks(first_positive_ranks(q @ g.T, d.relevant))["R@1"])
    return float(np.mean(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--groups", type=int, default=400, help="concepts kept (a seeded choice), 0: all")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/serving-runtimes-results.json"))
    ap.add_argument("--markdown", type=Path, default=Path("benchmarks/serving-runtimes-results.md"))
    args = ap.parse_args()
    cache = FeatureCache(args.cache) if args.cache else FeatureCache()
    ds = PairedDataset.from_manifest(args.manifest)
    ds = keep_groups(ds, args.groups or None)
    scores: dict[str, dict[str, list[float]]] = {rt: {"served": [], "consistent": []} for rt in RUNTIMES}
    sizes = []
    for seed in range(args.splits):
        train, test = ds.split(0.2, seed=seed)
        sizes.append((len(train), len(test)))
        model = fit(train, ["image", "text"], cache=cache)  # the default fit, torch features
        indexed = evaluate_detailed(model, test, cache)
        for rt in RUNTIMES:
            other = evaluate_detailed(model.with_runtimes({"image": rt, "text": rt}), test, cache)
            scores[rt]["served"].append(served_r1(indexed, other))
            scores[rt]["consistent"].append(float(np.mean([other.directions[d].metrics["R@1"] for d in DIRECTIONS])))
        print(json.dumps({"seed": seed, **{rt: {k: v[-1] for k, v in s.items()} for rt, s in scores.items()}}),
              flush=True)
    rows = []
    for rt in RUNTIMES:
        row: dict[str, Any] = {"runtime": rt}
        for kind in ("served", "consistent"):
            vals = np.asarray(scores[rt][kind])
            diffs = vals - np.asarray(scores["torch"]["consistent"])
            row[kind] = {"r1": float(vals.mean()), "delta": float(diffs.mean()), "delta_std": float(diffs.std()),
                         "per_split": vals.tolist()}
        rows.append(row)
    results = {"manifest": str(args.manifest), "splits": args.splits, "train_test_rows": sizes, "rows": rows,
               "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count()}
    args.json.write_text(json.dumps(results, indent=2))
    kept = args.groups or "all"
    lines = [f"Held-out R@1 (mean of text→image and image→text), emoji ({kept} concepts), the default fit on "
             "torch features, "
             f"{args.splits} seeded splits ({sizes[0][0]} train / {sizes[0][1]} test rows).\n",
             "| queries in | served (items as indexed, torch) | Δ vs torch | consistent (items re-indexed) "
             "| Δ vs torch |",
             "|---|---:|---:|---:|---:|"]
    for row in rows:
        s, c = row["served"], row["consistent"]
        lines.append(f"| {row['runtime']} | {s['r1']:.4f} | {s['delta']:+.4f} ± {s['delta_std']:.4f} | "
                     f"{c['r1']:.4f} | {c['delta']:+.4f} ± {c['delta_std']:.4f} |")
    args.markdown.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
