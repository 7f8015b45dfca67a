"""``method="auto"``: pick the method by group k-fold cross-validation on the training rows, then refit.

Candidates are (method, fixed knobs, input conditioning): closed forms over their small grids and a
few trained losses on the step schedule. Each is fitted on k−1 folds of the training groups and
scored on the held-back fold (mean R@1 of both directions of every pair, same group = relevant);
held-out test rows never reach this module, since ``fit`` receives only the training part. The
candidate with the best mean CV R@1 is refitted on every training row. Closed forms on one fold share
one decomposition across their grid (``closed_form._memo``), so their grid costs little; trained
candidates dominate the time and are skipped, in order, once the time budget is spent.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from modalign.align.methods import METHODS, FitContext, MethodResult
from modalign.align.trainer import TrainData, validation_score

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One configuration auto may choose: a registered method with every knob fixed."""

    name: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    input_norm: str = "center"

    @property
    def trained(self) -> bool:
        return self.method not in ("procrustes", "cca", "ridge")

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "options": dict(self.options), "input_norm": self.input_norm}


#: conditionings of the closed forms; the whitening ones are known but not tried by default (see NOT_BY_DEFAULT)
CLOSED_NORMS = ("center", "l2", "whiten:0.1", "whiten:0.3", "whiten:0.6")


def _suffix(norm: str) -> str:
    return "" if norm == "center" else "+" + norm.replace(":", "")


def _grid() -> dict[str, Candidate]:
    out: list[Candidate] = []
    for norm in CLOSED_NORMS:
        suffix = _suffix(norm)
        for whiten in (True, False):
            out.append(Candidate(f"procrustes(whiten={whiten}){suffix}", "procrustes", {"whiten": whiten}, norm))
        for reg in (0.1, 0.3, 0.6, 0.8):
            for power in (0.0, 1.0, 2.0, 4.0):
                out.append(Candidate(f"cca(reg={reg},power={power}){suffix}", "cca", {"reg": reg, "power": power},
                                     norm))
        for alpha in (0.1, 1.0):
            out.append(Candidate(f"ridge(alpha={alpha}){suffix}", "ridge", {"alpha": alpha, "whiten": False}, norm))
    out += [Candidate("infonce+l2", "infonce", {}, "l2"),
            Candidate("siglip+l2", "siglip", {}, "l2"),
            Candidate("infonce+structure+l2", "infonce", {"structure": 1.0}, "l2")]
    return {c.name: c for c in out}


#: every candidate auto knows, by name (the ``--candidates`` vocabulary also takes method names)
CANDIDATES: dict[str, Candidate] = _grid()
DEFAULT_FOLDS = 3
DEFAULT_BUDGET_S = 90.0
#: CV runs on at most this many rows (a seeded sample of whole groups); the refit uses every row
MAX_CV_ROWS = 20_000


#: left out of the default set: STRUCTURE never beat plain InfoNCE in our benchmarks (docs/alignment.md) and
#: costs a third of the CV time; the PCA-whitening conditionings scored below the default grid's best in CV
#: in 5 of 6 emoji/icons cases and lost on held-out data in the sixth (benchmarks/conditioning_cv.py,
#: docs/alignment.md), and cost a D × D eigendecomposition per fold. Ask for them by name (or ``whiten``)
NOT_BY_DEFAULT = {"infonce+structure+l2"} | {c.name for c in CANDIDATES.values() if c.input_norm.startswith("whiten")}


def select_candidates(spec: str | Sequence[str] | None) -> list[Candidate]:
    """``None``/"all" = the default set; otherwise names or method names ("cca" = every CCA candidate but the
    whitened ones, which "whiten" names)."""
    if spec is None or spec == "all":
        return [c for c in CANDIDATES.values() if c.name not in NOT_BY_DEFAULT]
    # candidate names hold commas inside their parentheses ("cca(reg=0.3,power=2.0)"): split outside them
    parts = re.split(r",(?![^()]*\))", spec) if isinstance(spec, str) else spec
    names = [s.strip() for s in parts if s.strip()]
    chosen: dict[str, Candidate] = {}
    for name in names:
        # a method name means its center/l2 candidates; "whiten" means every whitened one
        hits = [c for c in CANDIDATES.values()
                if c.name == name or (c.method == name and not c.input_norm.startswith("whiten"))
                or (name == "whiten" and c.input_norm.startswith("whiten"))]
        if not hits:
            methods = sorted({c.method for c in CANDIDATES.values()})
            raise ValueError(f"auto: unknown candidate {name!r}; give a method ({', '.join(methods)}) or a "
                             f"candidate name such as {next(iter(CANDIDATES))!r}")
        chosen.update({c.name: c for c in hits})
    return list(chosen.values())


def group_folds(groups: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """k disjoint row sets; each group's rows all land in one fold (seeded permutation of the groups)."""
    unique = np.unique(groups)
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = np.empty(len(unique), dtype=np.int64)
    fold_of[order] = np.arange(len(unique)) % k
    lookup = fold_of[np.searchsorted(unique, groups)]
    return [np.flatnonzero(lookup == f) for f in range(k)]


def _take(data: TrainData, rows: np.ndarray) -> TrainData:
    return TrainData(features={m: x[rows] for m, x in data.features.items()},
                     present={m: p[rows] for m, p in data.present.items()}, groups=data.groups[rows])


def _concat(a: TrainData, b: TrainData | None) -> TrainData:
    if b is None or not len(b):
        return a
    return TrainData(features={m: np.concatenate([np.asarray(a.features[m]), np.asarray(b.features[m])])
                               for m in a.features},
                     present={m: np.concatenate([a.present[m], b.present[m]]) for m in a.present},
                     groups=np.concatenate([a.groups, b.groups]))


def _inner_split(data: TrainData, seed: int, fraction: float = 0.1) -> tuple[TrainData, TrainData | None]:
    """Training rows and an early-stopping split of whole groups carved from them (trained candidates)."""
    unique = np.unique(data.groups)
    n_val = round(fraction * len(unique))
    if n_val < 2 or len(unique) - n_val < 2:
        return data, None
    val_groups = np.random.default_rng(seed).permutation(unique)[:n_val]
    is_val = np.isin(data.groups, val_groups)
    return _take(data, np.flatnonzero(~is_val)), _take(data, np.flatnonzero(is_val))


def candidate_context(ctx: FitContext, cand: Candidate, train: TrainData, val: TrainData | None) -> FitContext:
    """``ctx`` narrowed to one candidate: its method's knobs fixed, its conditioning, the step schedule."""
    settings = ctx.settings
    if cand.trained and settings.steps is None:  # epochs were not asked for explicitly: the step schedule
        settings = replace(settings, steps="auto")
    options = {**cand.options, **{k: v for k, v in ctx.options.items() if k == "anchor"}}
    return replace(ctx, train=train, val=val, options=options, input_norm=cand.input_norm, settings=settings,
                   progress=None)


def _fit_candidate(ctx: FitContext, cand: Candidate, train: TrainData, seed: int) -> MethodResult:
    val = None
    if cand.trained and ctx.settings.restore_best:  # only early stopping needs rows held back
        train, val = _inner_split(train, seed)
    return METHODS.get(cand.method)(candidate_context(ctx, cand, train, val))


def cross_validate(ctx: FitContext, candidates: Sequence[Candidate], folds: int = DEFAULT_FOLDS,
                   budget_s: float = DEFAULT_BUDGET_S,
                   clock: Callable[[], float] = time.perf_counter) -> list[dict[str, Any]]:
    """One row per candidate: CV R@1 per fold, mean, std, seconds; or why it was skipped."""
    pool = _concat(ctx.train.in_memory(), ctx.val.in_memory() if ctx.val is not None else None)
    if len(pool) > MAX_CV_ROWS:
        rows = np.sort(np.random.default_rng(ctx.settings.seed).choice(len(pool), MAX_CV_ROWS, replace=False))
        pool = _take(pool, rows)
    n_groups = len(np.unique(pool.groups))
    k = int(min(folds, n_groups))
    if k < 2:
        raise ValueError(f"auto: cross-validation needs at least 2 training groups, got {n_groups}")
    parts = group_folds(pool.groups, k, ctx.settings.seed)
    pairs = pool.pairs()
    folds_data = [(_take(pool, np.concatenate([parts[j] for j in range(k) if j != f])), _take(pool, parts[f]))
                  for f in range(k)]
    start = clock()
    scores: dict[str, list[float]] = {c.name: [] for c in candidates}
    seconds: dict[str, float] = {c.name: 0.0 for c in candidates}
    skipped: dict[str, str] = {}

    def run(cand: Candidate, f: int) -> None:
        t0 = clock()
        try:
            heads, _ = _fit_candidate(ctx, cand, folds_data[f][0], ctx.settings.seed + f)
            scores[cand.name].append(validation_score(heads, folds_data[f][1], pairs))
        except (ValueError, np.linalg.LinAlgError) as exc:  # e.g. too few rows in a fold for this solver
            skipped[cand.name] = str(exc)
        seconds[cand.name] += clock() - t0

    closed = [c for c in candidates if not c.trained]
    # closed forms: fold by fold, so the grid of one fold reuses its decompositions (closed_form._memo)
    for f in range(k):
        for cand in closed:
            if cand.name not in skipped:
                run(cand, f)
    # trained candidates dominate the time: once the budget is spent the rest are skipped
    for cand in (c for c in candidates if c.trained):
        if clock() - start > budget_s:
            skipped[cand.name] = f"time budget of {budget_s:.0f} s spent"
            continue
        for f in range(k):
            if cand.name not in skipped:
                run(cand, f)
    table: list[dict[str, Any]] = []
    for cand in candidates:
        row: dict[str, Any] = {"candidate": cand.name, **cand.to_json(), "seconds": seconds[cand.name]}
        if cand.name in skipped:
            table.append({**row, "skipped": skipped[cand.name]})
        else:
            vals = scores[cand.name]
            table.append({**row, "folds": vals, "mean": float(np.mean(vals)), "std": float(np.std(vals))})
    return table


def fit_auto(ctx: FitContext) -> MethodResult:
    """CV over the candidates (``options``: ``candidates``, ``folds``, ``budget_s``), refit the winner."""
    ctx.check_locked()
    opts = dict(ctx.options)
    unknown = set(opts) - {"candidates", "folds", "budget_s", "anchor"}
    if unknown:
        raise ValueError(f"auto: unknown option(s) {sorted(unknown)}; it takes anchor, budget_s, candidates, folds")
    candidates = select_candidates(opts.get("candidates"))
    if ctx.locked or ctx.head != "linear":
        # a non-linear head is the user's explicit choice, and closed forms lock only their anchor:
        # keep to the trained candidates, which handle both
        candidates = [c for c in candidates if c.trained]
    if not candidates:
        raise ValueError("auto: no candidate left to try")
    t0 = time.perf_counter()
    table = cross_validate(ctx, candidates, int(opts.get("folds", DEFAULT_FOLDS)),
                           float(opts.get("budget_s", DEFAULT_BUDGET_S)))
    scored = [r for r in table if "mean" in r]
    if not scored:
        reasons = "; ".join(f"{r['candidate']}: {r['skipped']}" for r in table[:3])
        raise ValueError(f"auto: no candidate could be cross-validated ({reasons})")
    best_row = max(scored, key=lambda r: (r["mean"], -r["std"]))
    best = CANDIDATES[best_row["candidate"]]
    cv_s = time.perf_counter() - t0
    # refit on every training row: closed forms take all of them; trained ones keep ctx.val to stop early
    train = ctx.train if best.trained else _concat(ctx.train.in_memory(),
                                                   ctx.val.in_memory() if ctx.val is not None else None)
    refit_ctx = candidate_context(ctx, best, train, ctx.val if best.trained else None)
    refit_ctx = replace(refit_ctx, progress=ctx.progress)
    heads, info = METHODS.get(best.method)(refit_ctx)
    # closed forms are refitted on the validation rows too: the CV mean is then the honest estimate
    info = {**info, "val_R@1": ctx.val_score(heads) if best.trained else best_row["mean"],
            "auto": {"picked": best.name, **best.to_json(), "cv_R@1": best_row["mean"], "cv_std": best_row["std"],
                     "folds": len(best_row["folds"]), "cv_seconds": cv_s, "table": table}}
    return heads, info


METHODS.register("auto")(fit_auto)
