"""Does the probe predict retrieval? Its score on the training pairs against the default fit's held-out R@1.

    .venv/bin/python benchmarks/probe_calibration.py --results benchmarks/alignment-auto-results.json \\
        [--datasets ...] [--sizes 250,500,1000,all] [--seeds 0,1,2] [--data-dir DIR] [--cache DIR] \\
        [--json out.json] [--markdown out.md]

For each built-in dataset, size and seed of ``make bench-align`` (the same held-out split and the same
draw of training pairs), the probe scores every layer pair of the drawn training rows and reports its
best mutual-kNN as a multiple of chance, as ``modalign probe`` does. Beside it: the held-out R@1 of the
default fit on those very pairs (mean of both directions, read from the bench-align results) and the
chance R@1 of that held-out gallery. Reported: Spearman's rank correlation of the probe's multiple with
the held-out R@1 and with R@1 ÷ chance, and per verdict band the range of held-out R@1 ÷ chance seen.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))

import alignment as A

from modalign.evaluation.probe import CHANCE_LIKE, CLEARLY_ALIGNED, probe_layers
from modalign.evaluation.retrieval import chance_metrics
from modalign.features import FeatureCache


def heldout_chance(prep: A.Prepared) -> float:
    """Chance R@1 of the held-out gallery, mean of both directions (the relevance rule of heldout_r1)."""
    a, b = prep.modalities
    ra, rb = prep.test[a]["row_to_item"], prep.test[b]["row_to_item"]
    n_a = len(next(iter(prep.test[a]["features"].values())))
    n_b = len(next(iter(prep.test[b]["features"].values())))
    rel = np.zeros((n_a, n_b), dtype=bool)
    rel[ra, rb] = True
    return float(np.mean([chance_metrics(rel, (1,))["R@1"], chance_metrics(rel.T, (1,))["R@1"]]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=Path("benchmarks/alignment-auto-results.json"))
    p.add_argument("--datasets", default=",".join(A.DATASETS))
    p.add_argument("--sizes", default="250,500,1000,all")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--data-dir", type=Path, default=Path("data/bench"))
    p.add_argument("--cache", default=None)
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    args = p.parse_args()
    bench = json.loads(args.results.read_text())
    held = {(r["dataset"], str(r["size"]), r["seed"]): float(np.mean([d["R@1"] for d in r["directions"].values()]))
            for r in bench["runs"] if r["method"] == "auto"}
    points = []
    for name in args.datasets.split(","):
        spec = A.DATASETS[name]
        prep = A.prepare(name, A.builtin_manifest(name, args.data_dir), spec.groups, FeatureCache(args.cache),
                         encoders=spec.encoders)
        chance = heldout_chance(prep)
        for size in args.sizes.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                key = (name, size, seed)
                if key not in held:
                    continue
                rows = A.draw_pairs(len(prep.train_groups), size if size == "all" else int(size), seed, A.MAX_PAIRS)
                feats = {m: {layer: x[rows] for layer, x in prep.train_feats[m].items()} for m in prep.modalities}
                present = {m: pr[rows] for m, pr in prep.train_present.items()}
                result = probe_layers(feats, present, prep.modalities, metrics=(), seed=seed)
                pair = next(iter(result.pairs.values()))
                score = pair.best("mutual_knn")[2]
                multiple = score / pair.chance(result.k)
                points.append({"dataset": name, "size": size, "seed": seed, "pairs": len(rows),
                               "probe_x_chance": multiple, "heldout_R@1": held[key], "heldout_chance": chance,
                               "R@1_x_chance": held[key] / chance})
                print(f"{name} {size} seed {seed}: probe {multiple:.1f}x chance, held-out R@1 {held[key]:.3f} "
                      f"({held[key] / chance:.1f}x chance)", flush=True)
    x = [pt["probe_x_chance"] for pt in points]
    rho_r1 = spearmanr(x, [pt["heldout_R@1"] for pt in points]).statistic
    rho_x = spearmanr(x, [pt["R@1_x_chance"] for pt in points]).statistic
    bands = []
    for label, lo, hi in (("not alignable", 0.0, CHANCE_LIKE), ("alignable", CHANCE_LIKE, CLEARLY_ALIGNED),
                          ("clearly alignable", CLEARLY_ALIGNED, float("inf"))):
        inside = [pt for pt in points if lo <= pt["probe_x_chance"] < hi]
        r1x = [pt["R@1_x_chance"] for pt in inside]
        bands.append({"verdict": label, "probe_from": lo, "probe_to": hi, "points": len(inside),
                      "R@1_x_chance": [float(np.min(r1x)), float(np.median(r1x)), float(np.max(r1x))] if r1x else None,
                      "datasets": sorted({pt["dataset"] for pt in inside})})
    result_doc = {"points": points, "spearman_R@1": float(rho_r1), "spearman_R@1_x_chance": float(rho_x),
                  "bands": bands, "command": " ".join(["benchmarks/probe_calibration.py", *sys.argv[1:]])}
    if args.json:
        args.json.write_text(json.dumps(result_doc, indent=1))
    lines = [f"Probe (best mutual-kNN ÷ chance on the training pairs) against the default fit's held-out R@1, "
             f"{len(points)} fits: Spearman ρ = {rho_r1:.2f} with R@1, {rho_x:.2f} with R@1 ÷ chance.", "",
             "| verdict | probe × chance | fits | held-out R@1 ÷ chance (min / median / max) | datasets |",
             "|---|---|---:|---|---|"]
    for band in bands:
        r = band["R@1_x_chance"]
        span = f"{band['probe_from']:g}–{band['probe_to']:g}" if np.isfinite(band["probe_to"]) else \
            f"≥ {band['probe_from']:g}"
        lines.append(f"| {band['verdict']} | {span} | {band['points']} | "
                     f"{'–' if r is None else f'{r[0]:.1f} / {r[1]:.1f} / {r[2]:.1f}'} | "
                     f"{', '.join(band['datasets'])} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
