"""PCA-whitening conditioning (``input_norm="whiten:S"``) against auto's default grid, by CV and on held-out data.

    .venv/bin/python benchmarks/conditioning_cv.py --cache /tmp/exp/cache --data-dir /tmp/exp/data \\
        [--datasets emoji,icons] [--sizes 500,1000,all]

Per dataset and size (one draw of training pairs, seed 0): auto's 3-fold group CV over the closed-form
candidates of the default grid (center and l2 conditioning) plus the same closed forms whitened at
shrinkage 0.1 / 0.3 / 0.6. Reported: the best CV R@1 of the default grid and of the whitened grid, and
the held-out R@1 (mean of both directions) of each grid's CV pick refitted on all the drawn rows.
Whitening would join the default grid only if it won here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import alignment as A

from modalign.align.auto import CANDIDATES, NOT_BY_DEFAULT
from modalign.align.fit import fit_arrays
from modalign.align.trainer import TrainerSettings
from modalign.features import FeatureCache


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", default="emoji,icons")
    p.add_argument("--data-dir", default="data/bench")
    p.add_argument("--cache", default=None)
    p.add_argument("--sizes", default="500,1000,all")
    args = p.parse_args()
    torch.set_num_threads(1)
    default = [c.name for c in CANDIDATES.values() if not c.trained and c.name not in NOT_BY_DEFAULT]
    whitened = [c.name for c in CANDIDATES.values() if not c.trained and c.input_norm.startswith("whiten")]
    print("| dataset | pairs | best CV default grid | best CV whitened | held-out default pick | "
          "held-out whitened pick | CV s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.datasets.split(","):
        spec = A.DATASETS[name]
        groups = spec.groups if hasattr(spec, "groups") else spec[2]  # type: ignore[index]
        prep = A.prepare(name, A.builtin_manifest(name, Path(args.data_dir)), groups, FeatureCache(args.cache))
        for size in args.sizes.split(","):
            rows = A.draw_pairs(len(prep.train_groups), size if size == "all" else int(size), 0, A.MAX_PAIRS)
            feats = {m: {prep.default_layers[m]: prep.train_feats[m][prep.default_layers[m]][rows]}
                     for m in prep.modalities}
            present = {m: x[rows] for m, x in prep.train_present.items()}
            groups_of = [prep.train_groups[i] for i in rows]

            fit = partial(fit_arrays, feats, present, groups_of, prep.modalities, default_layers=prep.default_layers,
                          dim=256, settings=TrainerSettings(seed=0))

            t0 = time.perf_counter()
            table = fit(method="auto", val_fraction=0.1,
                        options={"candidates": default + whitened}).info["auto"]["table"]
            cv_s = time.perf_counter() - t0
            scored = {r["candidate"]: r for r in table if "mean" in r}
            picks = {}
            for label, names in (("default", default), ("whiten", whitened)):
                best = max((scored[n] for n in names if n in scored), key=lambda r: (r["mean"], -r["std"]))
                cand = CANDIDATES[best["candidate"]]
                refit = fit(method=cand.method, val_fraction=0.0, options=dict(cand.options),
                            input_norm=cand.input_norm)
                r1 = float(np.mean([v["R@1"] for v in A.heldout_r1(prep, refit.heads, refit.chosen).values()]))
                picks[label] = (best["mean"], best["candidate"], r1)
            d, w = picks["default"], picks["whiten"]
            print(f"| {name} | {len(rows)} | {d[0]:.3f} ({d[1]}) | {w[0]:.3f} ({w[1]}) | {d[2]:.3f} | {w[2]:.3f} | "
                  f"{cv_s:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
