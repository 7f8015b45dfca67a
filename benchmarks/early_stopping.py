"""The step schedule's stopping rule: train the whole budget (final weights) or stop on validation MRR.

    .venv/bin/python benchmarks/early_stopping.py --cache /tmp/exp/cache --data-dir /tmp/exp/data \\
        [--datasets speech,instruments,kanji,bible-en-es,emoji-multilingual,emoji,icons] [--sizes 250,1000,all] \\
        [--seeds 0,1] [--json out.json] [--markdown out.md]

Per dataset, size and seed (the same held-out split and pair draws as ``benchmarks/alignment.py``): InfoNCE
with a linear head and ``l2`` conditioning (auto's trained candidate) under ``steps="auto"``, once with
``restore_best=False`` (the default: the whole budget, final weights) and once with ``restore_best=True``
(stop after ``patience`` = 10 evaluations without a gain in validation MRR, keep the best). Both carve the
same 10 % validation split of the drawn groups, so they train on the same rows. Reported: held-out R@1,
mean of both directions, and the step each result comes from.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import alignment as A

from modalign.align.fit import fit_arrays
from modalign.align.trainer import TrainerSettings
from modalign.features import FeatureCache


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", default="speech,instruments,kanji,bible-en-es,emoji-multilingual,emoji,icons")
    p.add_argument("--data-dir", default="data/bench")
    p.add_argument("--cache", default=None)
    p.add_argument("--sizes", default="250,1000,all")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--markdown", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows_out = []
    lines = ["| dataset | pairs | seed | full budget (default) | stop on val MRR | steps (stopped at) |",
             "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for name in args.datasets.split(","):
        spec = A.DATASETS[name]
        prep = A.prepare(name, A.builtin_manifest(name, Path(args.data_dir)), spec.groups, FeatureCache(args.cache),
                         encoders=spec.encoders)
        for size in args.sizes.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                rows = A.draw_pairs(len(prep.train_groups), size if size == "all" else int(size), seed, A.MAX_PAIRS)
                feats = {m: {prep.default_layers[m]: prep.train_feats[m][prep.default_layers[m]][rows]}
                         for m in prep.modalities}
                result = {}
                for restore in (False, True):
                    fitted = fit_arrays(feats, {m: x[rows] for m, x in prep.train_present.items()},
                                        [prep.train_groups[i] for i in rows], prep.modalities,
                                        default_layers=prep.default_layers, method="infonce", dim=256,
                                        head_options={"input_norm": "l2"}, val_fraction=0.1,
                                        settings=TrainerSettings(seed=seed, steps="auto", restore_best=restore))
                    r1 = float(np.mean([v["R@1"] for v in A.heldout_r1(prep, fitted.heads, fitted.chosen).values()]))
                    result[restore] = (r1, int(fitted.info["best_step"]), int(fitted.info["schedule"]["steps"]))
                full, stop = result[False], result[True]
                rows_out.append({"dataset": name, "pairs": len(rows), "seed": seed, "full_budget_R@1": full[0],
                                 "stop_on_val_R@1": stop[0], "steps": full[2], "stopped_at": stop[1]})
                line = (f"| {name} | {len(rows)} | {seed} | {full[0]:.3f} | {stop[0]:.3f} | {full[2]} ({stop[1]}) |")
                lines.append(line)
                print(line, flush=True)
    gains = np.array([r["full_budget_R@1"] - r["stop_on_val_R@1"] for r in rows_out])
    summary = (f"full budget − stop on val: mean {gains.mean():+.3f}, better in {(gains > 1e-9).sum()}, "
               f"equal in {(np.abs(gains) <= 1e-9).sum()}, worse in {(gains < -1e-9).sum()} of {len(gains)} cells")
    print(summary)
    lines += ["", summary]
    if args.json:
        args.json.write_text(json.dumps({"rows": rows_out, "summary": summary}, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
