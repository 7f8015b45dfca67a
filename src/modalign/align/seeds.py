"""``seeds=N``: train a trained method N times with different seeds; report the spread; optionally ensemble.

Only the training seed changes (head initialisation, batch order); the validation split stays the
one of the base seed, so every run is scored on the same rows and the spread is the seeds' alone.
The returned heads are the base seed's (the same model a plain fit gives, plus the spread), or with
``ensemble`` one ``EnsembleHead`` per modality averaging the N runs' unit outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from modalign.align.heads.base import Head
from modalign.align.heads.ensemble import MAX_MEMBERS, EnsembleHead, align_members
from modalign.align.methods import FitContext, MethodResult
from modalign.align.train_data import TrainData, take_rows
from modalign.metrics.ranks import first_positive_ranks

#: methods with nothing seeded to vary (closed forms are deterministic; auto picks one itself)
UNSEEDED = {"procrustes", "cca", "ridge", "auto"}


def check_seeds(method: str, seeds: int, ensemble: bool) -> None:
    if not 1 <= int(seeds) <= MAX_MEMBERS:
        raise ValueError(f"seeds must be between 1 and {MAX_MEMBERS}, got {seeds}")
    if seeds > 1 and method in UNSEEDED:
        raise ValueError(f"seeds: {method} has no seed to vary; use a trained method (infonce, siglip, cwcl, ...)")
    if ensemble and seeds < 2:
        raise ValueError("ensemble needs seeds of 2 or more")


def val_metrics(heads: dict[str, Head], val: TrainData | None) -> dict[str, float]:
    """R@1 and MRR of every direction of every pair on the validation rows (same group = relevant), and
    ``R@1`` (their mean R@1, what early stopping and ``val_R@1`` report)."""
    if val is None or not len(val):
        return {}
    out: dict[str, float] = {}
    with torch.no_grad():
        for a, b in val.pairs():
            idx = np.flatnonzero(val.present[a] & val.present[b])
            if len(idx) < 2:
                continue
            za = F.normalize(heads[a].eval()(take_rows(val.features[a], idx)), dim=1).numpy()
            zb = F.normalize(heads[b].eval()(take_rows(val.features[b], idx)), dim=1).numpy()
            rel = val.groups[idx][:, None] == val.groups[idx][None, :]
            sim = za @ zb.T
            for q, t, s, r in ((a, b, sim, rel), (b, a, sim.T, rel.T)):
                ranks = first_positive_ranks(s, r)
                out[f"{q}->{t} R@1"] = float(np.mean(ranks == 1))
                out[f"{q}->{t} MRR"] = float(np.mean(1.0 / ranks))
    r1 = [v for k, v in out.items() if k.endswith(" R@1")]
    if r1:
        out["R@1"] = float(np.mean(r1))
    return out


#: training rows per modality the members' rotations are fitted on (a seeded sample past it)
ALIGN_ROWS = 20_000


def _outputs(heads: dict[str, Head], data: TrainData) -> torch.Tensor:
    """Unit outputs of every modality's heads on its training rows, stacked (the rows Procrustes aligns)."""
    parts = []
    with torch.no_grad():
        for m, head in heads.items():
            idx = np.flatnonzero(data.present[m])
            if len(idx) > ALIGN_ROWS:
                idx = np.sort(np.random.default_rng(0).choice(idx, ALIGN_ROWS, replace=False))
            parts.append(F.normalize(head.eval()(take_rows(data.features[m], idx)), dim=1))
    return torch.cat(parts)


def _spread(rows: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    return ({k: float(np.mean([r[k] for r in rows])) for k in keys},
            {k: float(np.std([r[k] for r in rows])) for k in keys})


def fit_seeds(fit_one: Callable[[FitContext], MethodResult], ctx: FitContext, seeds: int,
              ensemble: bool = False) -> MethodResult:
    """Run ``fit_one`` for seeds ``ctx.settings.seed + 0..N-1``; info gains ``seeds`` (per run, mean, std)."""
    base = ctx.settings.seed
    runs: list[MethodResult] = []
    for i in range(seeds):
        heads, info = fit_one(replace(ctx, settings=replace(ctx.settings, seed=base + i)))
        runs.append(({m: h.eval() for m, h in heads.items()}, info))
    per_run = []
    for i, (heads, info) in enumerate(runs):
        row: dict[str, Any] = {"seed": base + i, **{f"val {k}": v for k, v in val_metrics(heads, ctx.val).items()}}
        for key in ("best_step", "best_epoch", "epochs_run"):
            if key in info:
                row[key] = info[key]
        per_run.append(row)
    numeric = [{k: float(v) for k, v in r.items() if k != "seed" and isinstance(v, int | float)} for r in per_run]
    mean, std = _spread(numeric)
    heads, info = runs[0]
    report: dict[str, Any] = {"n": seeds, "seeds": [base + i for i in range(seeds)], "per_seed": per_run,
                              "mean": mean, "std": std, "kept": "ensemble" if ensemble else f"seed {base}"}
    if ensemble:
        rotations = align_members([_outputs(r[0], ctx.train) for r in runs])
        # a locked modality's identity head is the same in every run: keep it as it is
        heads = {m: EnsembleHead.of([r[0][m] for r in runs], rotations) if heads[m].trainable else heads[m]
                 for m in ctx.modalities}
        report["ensemble"] = {f"val {k}": v for k, v in val_metrics(heads, ctx.val).items()}
        info = {**info, "val_R@1": report["ensemble"].get("val R@1", info.get("val_R@1"))}
    return heads, {**info, "seeds": report}
