"""``--seeds N`` on held-out data: the spread of single seeds, and two ways to combine the N heads.

    .venv/bin/python benchmarks/seeds_ensemble.py --cache /tmp/exp/cache --data-dir /tmp/exp/data \\
        [--dataset emoji] [--sizes 1000,all] [--seeds 3] [--method infonce]

Per size: one draw of training pairs (seed 0), then ``fit_arrays(seeds=N, ensemble=True)`` on the
step schedule. Scored on the held-out concepts like ``benchmarks/alignment.py`` (mean R@1 of both
directions): each member alone, the ensemble (mean of the members' Procrustes-rotated unit outputs,
what ``--ensemble`` saves), the same without the rotations, and weight averaging (each member's
rotation folded into its linear weights, then weights and input statistics averaged across the seeds).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import alignment as A

from modalign.align.fit import fit_arrays
from modalign.align.trainer import TrainerSettings
from modalign.features import FeatureCache


def weight_average(ensemble: torch.nn.Module) -> torch.nn.Module:
    """One linear head: the members' rotations folded into their weights, then every tensor averaged
    (weights, bias, input statistics): the alternative to averaging the members' outputs."""
    avg = copy.deepcopy(ensemble.members[0])
    with torch.no_grad():
        weights = [r.T @ m.linear.weight for m, r in zip(ensemble.members, ensemble.rotations, strict=True)]
        biases = [m.linear.bias @ r for m, r in zip(ensemble.members, ensemble.rotations, strict=True)]
        avg.linear.weight.copy_(torch.stack(weights).mean(0))
        avg.linear.bias.copy_(torch.stack(biases).mean(0))
        for name in ("input_mean", "input_scale"):
            getattr(avg, name).copy_(torch.stack([getattr(m, name) for m in ensemble.members]).mean(0))
    return avg.eval()


def unrotated(ensemble: torch.nn.Module) -> torch.nn.Module:
    """The same ensemble without its Procrustes rotations (each member in its own space)."""
    plain = copy.deepcopy(ensemble)
    with torch.no_grad():
        plain.rotations.copy_(torch.eye(plain.out_dim).repeat(len(plain.members), 1, 1))
    return plain


def mean_r1(prep: A.Prepared, heads: dict, chosen: dict) -> float:
    return float(np.mean([v["R@1"] for v in A.heldout_r1(prep, heads, chosen).values()]))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="emoji")
    p.add_argument("--data-dir", default="data/bench")
    p.add_argument("--cache", default=None)
    p.add_argument("--sizes", default="1000,all")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--method", default="infonce")
    args = p.parse_args()
    torch.set_num_threads(1)
    manifest = A.builtin_manifest(args.dataset, Path(args.data_dir))
    spec = A.DATASETS[args.dataset]
    groups = spec.groups if hasattr(spec, "groups") else spec[2]  # type: ignore[index]
    prep = A.prepare(args.dataset, manifest, groups, FeatureCache(args.cache))
    print(f"# {args.dataset}: {prep.info['test_groups']} held-out concepts; method {args.method}, "
          f"{args.seeds} seeds, step schedule; held-out R@1 (mean of both directions)")
    print("| pairs | single seeds (mean ± std) | best single | ensemble (rotated unit outputs, saved) | "
          "ensemble without rotations | weight average (rotated) | fit s |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        rows = A.draw_pairs(len(prep.train_groups), size if size == "all" else int(size), 0, A.MAX_PAIRS)
        feats = {m: {prep.default_layers[m]: prep.train_feats[m][prep.default_layers[m]][rows]}
                 for m in prep.modalities}
        t0 = time.perf_counter()
        fitted = fit_arrays(feats, {m: x[rows] for m, x in prep.train_present.items()},
                            [prep.train_groups[i] for i in rows], prep.modalities,
                            default_layers=prep.default_layers, method=args.method, dim=256, val_fraction=0.1,
                            settings=TrainerSettings(steps="auto", seed=0), seeds=args.seeds, ensemble=True)
        secs = time.perf_counter() - t0
        ens = fitted.heads
        singles = [mean_r1(prep, {m: ens[m].members[i] for m in ens}, fitted.chosen) for i in range(args.seeds)]
        averaged = {m: weight_average(ens[m]) for m in ens}
        plain = {m: unrotated(ens[m]) for m in ens}
        print(f"| {len(rows)} | {np.mean(singles):.3f} ± {np.std(singles):.3f} | {max(singles):.3f} | "
              f"{mean_r1(prep, ens, fitted.chosen):.3f} | {mean_r1(prep, plain, fitted.chosen):.3f} | "
              f"{mean_r1(prep, averaged, fitted.chosen):.3f} | {secs:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
