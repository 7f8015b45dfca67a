"""`--encoders image=auto` against each image encoder alone, under the default fit: held-out R@1 and cost.

    .venv/bin/python benchmarks/encoder_choice.py --data-dir DIR [--datasets emoji-multilingual,kanji]
        [--sizes 500,1000] [--seeds 3] [--cache DIR] [--json F] [--markdown F]

Per dataset and size N: whole groups of a seeded order up to N / 0.8 rows, then ``--seeds`` seeded
concept-disjoint splits (20 % of the groups held out, so about N training rows). On each split, ``modalign.fit``
(method auto) with the image column encoded by each candidate set alone, and once with ``image=auto``, which
chooses among the same sets on a 400-row sample of the training groups; each is scored with
``modalign.evaluate`` on the held-out groups: R@1 as the mean of both directions. The other column keeps the
dataset's encoder in ``benchmarks/alignment.py``. Reported per cell: each set's R@1, auto's R@1 and what it
picked, auto ÷ the default set (effnet-lite0), auto ÷ the best single set in hindsight, and the seconds auto's
choice took (encoding the sample, with the features already cached after the first split, plus the CV).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as benchmarks/alignment.py: one BLAS thread on 2 cores

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alignment import DATASETS, builtin_manifest
from image_encoders import subset

from modalign import evaluate, fit
from modalign.align.encoder_choice import CANDIDATES_FOR_KIND
from modalign.data.dataset import PairedDataset
from modalign.features import FeatureCache


def r1(directions: dict[str, Any]) -> float:
    return float(np.mean([d["R@1"] for d in directions.values()]))


def run_cell(ds: PairedDataset, modalities: list[str], others: dict[str, str], sets: list[str], seed: int,
             cache: FeatureCache) -> dict[str, Any]:
    train, test = ds.split(0.2, seed=seed)
    out: dict[str, Any] = {"seed": seed, "train_rows": len(train), "test_rows": len(test), "r1": {}}
    for name in sets:
        model = fit(train, modalities, cache=cache, encoders={"image": name, **others})
        out["r1"][name] = r1(evaluate(model, test, cache)["directions"])
    start = time.perf_counter()
    model = fit(train, modalities, cache=cache, encoders={"image": ("auto", {"candidates": sets}), **others})
    out["auto_fit_s"] = time.perf_counter() - start
    choice = model.metrics["encoders"]
    out["picked"] = choice["chosen"]["image"]
    out["choice_s"] = choice["seconds"]
    out["sample_cv"] = {t["encoder"]: t["cv_r1"] for t in choice["trials"]}
    out["r1"]["auto"] = r1(evaluate(model, test, cache)["directions"])
    return out


def summarize(cells: list[dict[str, Any]], sets: list[str]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["dataset"], c["size"]), []).append(c)
    rows = []
    for (name, size), runs in groups.items():
        mean = {k: float(np.mean([r["r1"][k] for r in runs])) for k in [*sets, "auto"]}
        std = {k: float(np.std([r["r1"][k] for r in runs])) for k in [*sets, "auto"]}
        best = max(sets, key=mean.__getitem__)
        rows.append({"dataset": name, "size": size, "seeds": len(runs), "mean": mean, "std": std, "best_single": best,
                     "picked": dict(Counter(r["picked"] for r in runs)),
                     "auto_vs_default": mean["auto"] / mean[sets[0]], "auto_vs_best": mean["auto"] / mean[best],
                     "choice_s": float(np.mean([r["choice_s"] for r in runs]))})
    return rows


def markdown(rows: list[dict[str, Any]], sets: list[str], meta: dict[str, Any]) -> str:
    lines = [f"Command: `{meta['command']}` · {meta['date']} · {meta['machine']}", "",
             "Held-out R@1 (mean of both directions), mean ± std over seeded concept-disjoint splits.", "",
             "| dataset | ~pairs | " + " | ".join(sets) + " | auto | auto picked | auto ÷ default | auto ÷ best single "
             "| choice s |", "|---|---:|" + "---:|" * (len(sets) + 1) + "---|---:|---:|---:|"]
    for r in rows:
        cells = " | ".join(f"{r['mean'][k]:.3f} ± {r['std'][k]:.3f}" for k in [*sets, "auto"])
        picked = ", ".join(f"{k} ×{v}" for k, v in r["picked"].items())
        lines.append(f"| {r['dataset']} | {r['size']} | {cells} | {picked} | {r['auto_vs_default']:.2f} | "
                     f"{r['auto_vs_best']:.2f} | {r['choice_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--datasets", default="emoji-multilingual,kanji")
    ap.add_argument("--sizes", default="500,1000")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/encoder-choice-results.json"))
    ap.add_argument("--markdown", type=Path, default=Path("benchmarks/encoder-choice-results.md"))
    args = ap.parse_args()
    cache = FeatureCache(args.cache) if args.cache else FeatureCache()
    sets = list(CANDIDATES_FOR_KIND["image"])
    meta = {"command": "python benchmarks/encoder_choice.py " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {sys.platform}"}
    cells: list[dict[str, Any]] = []
    for name in args.datasets.split(","):
        spec = DATASETS[name]
        full = PairedDataset.from_manifest(builtin_manifest(name, args.data_dir))
        modalities = list(spec.encoders)
        others = {m: e for m, e in spec.encoders.items() if m != "image"}
        for size in (int(s) for s in args.sizes.split(",")):
            ds = subset(full, "", round(size / 0.8))
            for seed in range(args.seeds):
                cell = {"dataset": name, "size": size, **run_cell(ds, modalities, others, sets, seed, cache)}
                cells.append(cell)
                print(json.dumps(cell), flush=True)
                rows = summarize(cells, sets)
                args.json.write_text(json.dumps({"meta": meta, "cells": cells, "summary": rows}, indent=2))
                args.markdown.write_text(markdown(rows, sets, meta))
    print(markdown(summarize(cells, sets), sets, meta))


if __name__ == "__main__":
    main()
