"""``method="auto"``: pick the method by group k-fold cross-validation on the training rows, then refit.

Candidates are (method, fixed knobs, input conditioning): closed forms over their small grids and a
few trained losses on the step schedule. Each is fitted on k−1 folds of the training groups and
scored on the held-back fold (R@1 of both directions of every pair, same group = relevant; rows that hold
one modality only, the unpaired items, are never scored and train in every fold but the one that scores their
group); held-out
test rows never reach this module, since ``fit`` receives only the training part. The candidate with
the best mean CV R@1 is refitted on every training row.

The choice depends only on the data, the options and the seed, never on the clock. Its cost stays
small by construction: CCA candidates that differ only in their power share one decomposition per fold
(a power rescales the canonical directions), and a trained candidate goes on past the first fold only
when it ranks among the best there (successive halving). ``budget_s`` is opt-in; with it, trained
candidates left when the seconds are spent are skipped, and the choice then depends on time.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from modalign._deprecation import warn_deprecated
from modalign.align import semi_supervised as _semi  # noqa: F401  (registers the "semi-cca" method)
from modalign.align.closed_form import conditioned
from modalign.align.closed_form_grid import PairGrid
from modalign.align.methods import CLOSED_FORM_METHODS, METHODS, FitContext, MethodResult
from modalign.align.trainer import (
    Progress,
    TrainData,
    both_ways_r_at_1,
    chance_r_at_1,
    scored_rows,
    validation_scores,
)
from modalign.metrics.base import normalize_rows

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
        return self.method not in CLOSED_FORM_METHODS

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "options": dict(self.options), "input_norm": self.input_norm}


#: ``PairGrid`` serves every candidate of these closed forms from one fold's decompositions
GRID_METHODS = ("procrustes", "cca")
#: conditionings of the closed forms; the whitening ones are known but not tried by default (see NOT_BY_DEFAULT)
CLOSED_NORMS = ("center", "l2", "whiten:0.1", "whiten:0.3", "whiten:0.6")


# The vocabulary is built once at import, where mutation testing cannot switch a mutant in; it is checked by
# value instead (tests/test_auto_units.py).
def _suffix(norm: str) -> str:  # pragma: no mutate block
    return "" if norm == "center" else "+" + norm.replace(":", "")


def _grid() -> dict[str, Candidate]:  # pragma: no mutate block
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
    # the rounds of one (reg, ot) share their solves (semi_supervised.SemiCCA): rounds=1 costs nothing extra
    for reg in (0.6, 0.8, 0.9):
        out.append(Candidate(f"semi-cca(reg={reg},ot=0.0)", "semi-cca", {"reg": reg, "ot": 0.0}))
        for ot in (0.5, 1.0):
            for rounds in (1, 3):
                out.append(Candidate(f"semi-cca(reg={reg},ot={ot},rounds={rounds})", "semi-cca",
                                     {"reg": reg, "ot": ot, "rounds": rounds}))
    out += [Candidate("infonce+l2", "infonce", {}, "l2"),
            Candidate("siglip+l2", "siglip", {}, "l2"),
            Candidate("infonce+structure+l2", "infonce", {"structure": 1.0}, "l2")]
    return {c.name: c for c in out}


#: every candidate auto knows, by name (the ``--candidates`` vocabulary also takes method names)
CANDIDATES: dict[str, Candidate] = _grid()
DEFAULT_FOLDS = 3
#: auto's option names before they matched the CLI's flags, still accepted with a DeprecationWarning
RENAMED_OPTIONS = {"folds": "cv_folds", "budget_s": "time_budget"}
#: a trained candidate continues past the first fold only when it ranks in this top on that fold
HALVING_TOP = 3
#: CV runs on at most this many rows (a seeded sample of whole groups); the refit uses every row
MAX_CV_ROWS = 20_000


#: left out of the default set (ask for them by name, by method, or ``whiten``):
#: - trained candidates: picked by CV on small sets and then behind on held-out groups, and each costs more
#:   than the whole closed-form grid (docs/alignment.md, "The default set");
#: - ridge: never picked in the 84 auto fits of bench-align (7 datasets × 4 sizes × 3 seeds);
#: - PCA-whitening conditionings: below the grid's best in CV in 5 of 6 emoji/icons cases, behind on held-out
#:   data in the sixth (benchmarks/conditioning_cv.py), and a D × D eigendecomposition per fold;
#: - semi-cca: without rows that have one modality only it is CCA again; ``fit_auto`` adds it when there are.
NOT_BY_DEFAULT = {c.name for c in CANDIDATES.values()
                  if c.trained or c.input_norm.startswith("whiten") or c.method in ("ridge", "semi-cca")}
#: the candidates that use unpaired items, added to the default set when the rows hold at least MIN_UNPAIRED
SEMI_CANDIDATES = [c for c in CANDIDATES.values() if c.method == "semi-cca"]
MIN_UNPAIRED = 20


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


_concat = TrainData.followed_by


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


@dataclass
class _Scores:
    """Per-candidate CV bookkeeping: per-fold scores by direction, seconds, why it stopped."""

    folds: dict[str, list[dict[str, float]]]
    seconds: dict[str, float]
    stopped: dict[str, str] = field(default_factory=dict)

    def mean_on(self, name: str, fold: int) -> float:
        return float(np.mean(list(self.folds[name][fold].values())))


def cross_validate(ctx: FitContext, candidates: Sequence[Candidate], folds: int = DEFAULT_FOLDS,
                   budget_s: float | None = None, clock: Callable[[], float] | None = None,
                   progress: Progress | None = None) -> list[dict[str, Any]]:
    """One row per candidate: CV R@1 per fold and direction, mean, std, chance, seconds; or why it stopped.

    ``clock`` only times the candidates (and enforces ``budget_s`` when given); the scores and so the
    choice never depend on it. ``progress("cross-validate", done, total)`` reports every fitted fold.
    """
    clock = clock or time.perf_counter
    pool = _concat(ctx.train.in_memory(), ctx.val.in_memory() if ctx.val is not None else None)
    if len(pool) > MAX_CV_ROWS:
        rows = np.sort(np.random.default_rng(ctx.settings.seed).choice(len(pool), MAX_CV_ROWS, replace=False))
        pool = _take(pool, rows)
    # rows with one modality only (unpaired items) cannot be scored: they train in every fold
    paired = np.flatnonzero(np.sum([pool.present[m] for m in ctx.modalities], axis=0) >= 2)
    alone = np.setdiff1d(np.arange(len(pool)), paired)
    n_groups = len(np.unique(pool.groups[paired]))
    k = int(min(folds, n_groups))
    if k < 2:
        raise ValueError(f"auto: cross-validation needs at least 2 training groups, got {n_groups}")
    parts = [paired[p] for p in group_folds(pool.groups[paired], k, ctx.settings.seed)]
    pairs = pool.pairs()
    # ... except in the fold that scores their group: an unpaired item of a scored concept would leak it
    folds_data = [(_take(pool, np.concatenate([parts[j] for j in range(k) if j != f]
                                              + [alone[~np.isin(pool.groups[alone], pool.groups[parts[f]])]])),
                   _take(pool, parts[f])) for f in range(k)]
    chance = [float(np.mean([chance_r_at_1(v.groups[v.present[a] & v.present[b]]) for a, b in pairs]))
              for _, v in folds_data]
    start = clock()
    book = _Scores(folds={c.name: [] for c in candidates}, seconds={c.name: 0.0 for c in candidates})
    # progress in (candidate, fold) units: the bar reads "36/108" for 36 candidates over 3 folds
    total = k * len(candidates)
    done = [0]

    def tick(units: int) -> None:
        done[0] += units
        if progress is not None:
            progress("cross-validate", min(done[0], total), total)
        log.info("auto: cross-validation %d%% (%d candidates × %d folds)", 100 * done[0] // total,
                 len(candidates), k)

    def score(name: str, heads: dict[str, Any], f: int) -> None:
        book.folds[name].append(validation_scores(heads, folds_data[f][1], pairs))

    def run(cand: Candidate, f: int) -> None:
        t0 = clock()
        try:
            fold_ctx = ctx
            if cand.trained and progress is not None:
                def step(_stage: str, _i: int, _n: int) -> None:  # a trained fold keeps the bar alive
                    if progress is not None:
                        progress("cross-validate", done[0], total)
                fold_ctx = replace(ctx, progress=step)
            heads, _ = _fit_candidate(fold_ctx, cand, folds_data[f][0], ctx.settings.seed + f)
            score(cand.name, heads, f)
        except (ValueError, np.linalg.LinAlgError) as exc:  # e.g. too few rows in a fold for this solver
            book.stopped[cand.name] = str(exc)
        book.seconds[cand.name] += clock() - t0

    closed = [c for c in candidates if not c.trained]
    gridded = [c for c in closed if c.method in GRID_METHODS] if len(ctx.modalities) == 2 else []
    if gridded:
        # two modalities: every grid candidate of one fold and conditioning from one set of decompositions
        for f in range(k):
            for norm in dict.fromkeys(c.input_norm for c in gridded):
                family = [c for c in gridded if c.input_norm == norm and c.name not in book.stopped]
                if not family:  # every candidate of this conditioning failed on an earlier fold
                    tick(sum(c.input_norm == norm for c in gridded))
                    continue
                t0 = clock()
                try:
                    for cand, scores in zip(family, _grid_scores(ctx, family, *folds_data[f]), strict=True):
                        book.folds[cand.name].append(scores)
                except (ValueError, np.linalg.LinAlgError) as exc:  # e.g. too few rows in a fold
                    book.stopped.update({c.name: str(exc) for c in family})
                for c in family:
                    book.seconds[c.name] += (clock() - t0) / max(len(family), 1)
                tick(len(family))
    # the other closed forms (every one with three or more modalities) are each their own fit; closed_form's and
    # semi_supervised's memos share a fold's decompositions between them
    for f in range(k):
        for cand in closed:
            if cand in gridded:
                continue
            if cand.name not in book.stopped:
                run(cand, f)
            tick(1)
    trained = [c for c in candidates if c.trained]
    for cand in trained:  # successive halving: the first fold decides whether the others are worth it
        if budget_s is not None and clock() - start > budget_s:
            book.stopped[cand.name] = f"time budget of {budget_s:g} s spent"
            tick(k)
            continue
        run(cand, 0)
        tick(1)
        if cand.name in book.stopped:
            tick(k - 1)
            continue
        rivals = sorted((book.mean_on(n, 0) for n, v in book.folds.items() if v and n not in book.stopped),
                        reverse=True)
        mine = book.mean_on(cand.name, 0)
        if k > 1 and rivals.index(mine) >= HALVING_TOP:
            book.stopped[cand.name] = (f"dropped after fold 1 of {k}: R@1 {mine:.3f} ranked "
                                       f"{rivals.index(mine) + 1} of {len(rivals)} there (top {HALVING_TOP} go on)")
            tick(k - 1)
            continue
        for f in range(1, k):
            if cand.name not in book.stopped:
                run(cand, f)
            tick(1)
    return [_table_row(c, book, chance) for c in candidates]


def _grid_scores(ctx: FitContext, family: Sequence[Candidate], train: TrainData,
                 val: TrainData) -> list[dict[str, float]]:
    """R@1 by direction on ``val`` of each closed-form candidate of one conditioning, fitted on ``train``."""
    a, b = ctx.modalities
    std, heads = conditioned(train.features, train.present, [a, b], family[0].input_norm, ())
    shared = train.present[a] & train.present[b]
    if shared.sum() < 3:
        raise ValueError(f"{a!r} and {b!r} share {int(shared.sum())} rows in a fold")
    anchor = ctx.options.get("anchor") or a
    grid = PairGrid(std[anchor][shared], std[b if anchor == a else a][shared], ctx.dim)
    idx = scored_rows(val.present[a] & val.present[b])
    with torch.no_grad():
        val_std = {m: heads[m].standardize(torch.as_tensor(np.asarray(val.features[m])[idx])).numpy() for m in (a, b)}
    out = []
    for cand in family:
        mats = dict(zip((anchor, b if anchor == a else a), grid.matrices(cand.method, cand.options), strict=True))
        za, zb = (normalize_rows(val_std[m] @ mats[m].astype(np.float32)) for m in (a, b))
        out.append(dict(zip((f"{a}->{b}", f"{b}->{a}"), both_ways_r_at_1(za, zb, val.groups[idx]), strict=True)))
    return out



def _table_row(cand: Candidate, book: _Scores, chance: list[float]) -> dict[str, Any]:
    row: dict[str, Any] = {"candidate": cand.name, **cand.to_json(), "seconds": book.seconds[cand.name]}
    per_fold = book.folds[cand.name]
    if cand.name in book.stopped:
        out = {**row, "skipped": book.stopped[cand.name]}
        if per_fold:
            out["folds"] = [float(np.mean(list(d.values()))) for d in per_fold]
        return out
    means = [float(np.mean(list(d.values()))) for d in per_fold]
    directions = {d: [fold[d] for fold in per_fold] for d in per_fold[0]}
    return {**row, "folds": means, "mean": float(np.mean(means)), "std": float(np.std(means)),
            "directions": {d: {"mean": float(np.mean(v)), "std": float(np.std(v))} for d, v in directions.items()},
            "chance": float(np.mean(chance[:len(per_fold)]))}


def auto_options(options: dict[str, Any]) -> dict[str, Any]:
    """Auto's options, former names renamed (with a DeprecationWarning; the new name wins when both are given);
    an unknown one is a ValueError that lists the options auto takes."""
    opts = dict(options)
    for old, new in RENAMED_OPTIONS.items():  # the names before they matched the CLI's
        if old in opts:
            warn_deprecated(f"auto option {old!r} is now {new!r}")
            opts.setdefault(new, opts.pop(old))
    unknown = set(opts) - {"candidates", "cv_folds", "time_budget", "anchor"}
    if unknown:
        raise ValueError(f"auto: unknown option(s) {sorted(unknown)}; it takes anchor, candidates, cv_folds, "
                         "time_budget")
    return opts


def unpaired_items(ctx: FitContext) -> int:
    """Training rows (validation rows included) that have exactly one of two modalities; 0 with three or more."""
    if len(ctx.modalities) != 2:
        return 0
    a, b = ctx.modalities
    return sum(int(np.sum(data.present[a] != data.present[b])) for data in (ctx.train, ctx.val) if data is not None)


def best_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CV table rows by mean R@1, best first; equal means go to the steadier candidate (smaller std across
    folds); full ties keep the table's order (sorting is stable)."""
    return sorted(rows, key=lambda r: (r["mean"], -r["std"]), reverse=True)


def prefer_pairs_only(ranked: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``ranked`` with the best candidate that learns from pairs alone moved first when a semi-supervised one
    leads it by no more than one standard error of its fold scores (std / √folds).

    The semi-supervised candidates add fifteen chances to win CV by luck; on a set where nothing aligns (kanji,
    R@1 at chance) they won it and then scored below the pairs-only pick on held-out concepts. A real gain
    clears the margin: on the constructed case of tests/test_semi_supervised.py the lead is 0.17 and the
    standard error 0."""
    if not ranked or CANDIDATES[ranked[0]["candidate"]].method != "semi-cca":
        return ranked
    plain = next((r for r in ranked if CANDIDATES[r["candidate"]].method != "semi-cca"), None)
    lead = ranked[0]
    if plain is None or lead["mean"] - plain["mean"] > lead["std"] / np.sqrt(len(lead["folds"])):
        return ranked
    return [plain, *(r for r in ranked if r is not plain)]


def fit_auto(ctx: FitContext) -> MethodResult:
    """CV over the candidates (``options``: ``candidates``, ``cv_folds``, ``time_budget``, as the CLI's
    ``--candidates``, ``--cv-folds``, ``--time-budget``), refit the winner."""
    ctx.check_locked()
    opts = auto_options(ctx.options)
    candidates = select_candidates(opts.get("candidates"))
    if opts.get("candidates") in (None, "all") and unpaired_items(ctx) >= MIN_UNPAIRED:
        candidates += SEMI_CANDIDATES
    if ctx.locked or ctx.head != "linear":
        # a non-linear head is the user's explicit choice, and closed forms lock only their anchor:
        # keep to the trained candidates, which handle both
        candidates = [c for c in candidates if c.trained]
    if not candidates:
        raise ValueError("auto: no candidate left to try")
    t0 = time.perf_counter()
    budget = opts.get("time_budget")
    table = cross_validate(ctx, candidates, int(opts.get("cv_folds", DEFAULT_FOLDS)),
                           None if budget is None else float(budget), progress=ctx.progress)
    scored = [r for r in table if "mean" in r]
    if not scored:
        reasons = "; ".join(f"{r['candidate']}: {r['skipped']}" for r in table[:3])
        raise ValueError(f"auto: no candidate could be cross-validated ({reasons})")
    by_score = best_first(scored)
    ranked = prefer_pairs_only(by_score)
    best_row = ranked[0]
    best = CANDIDATES[best_row["candidate"]]
    cv_s = time.perf_counter() - t0
    # refit on every training row: closed forms take all of them; trained ones keep ctx.val to stop early
    train = ctx.train if best.trained else _concat(ctx.train.in_memory(),
                                                   ctx.val.in_memory() if ctx.val is not None else None)
    refit_ctx = candidate_context(ctx, best, train, ctx.val if best.trained else None)
    refit_ctx = replace(refit_ctx, progress=ctx.progress)
    heads, info = METHODS.get(best.method)(refit_ctx)
    runner_up = ranked[1] if len(ranked) > 1 else None
    summary: dict[str, Any] = {
        "picked": best.name, **best.to_json(), "cv_R@1": best_row["mean"], "cv_std": best_row["std"],
        "cv_directions": best_row["directions"], "chance_R@1": best_row["chance"],
        "runner_up": None if runner_up is None else {"candidate": runner_up["candidate"], "cv_R@1": runner_up["mean"],
                                                      "cv_std": runner_up["std"]},
        "folds": len(best_row["folds"]),
        "cv_rows": min(len(ctx.train) + (len(ctx.val) if ctx.val is not None else 0), MAX_CV_ROWS),
        "cv_seconds": cv_s, "time_dependent": budget is not None, "table": table}
    if ranked[0] is not by_score[0]:  # a semi-supervised candidate led by less than its standard error
        lead = by_score[0]
        summary["unpaired_lead_too_small"] = {"candidate": lead["candidate"], "cv_R@1": lead["mean"],
                                              "needed": lead["std"] / np.sqrt(len(lead["folds"]))}
    # closed forms are refitted on the validation rows too: the CV mean is then the honest estimate
    info = {**info, "val_R@1": ctx.val_score(heads) if best.trained else best_row["mean"], "auto": summary}
    log.info("auto: picked %s, CV R@1 %.3f ± %.3f (chance %.3f) over %d folds in %.1f s", best.name,
             best_row["mean"], best_row["std"], best_row["chance"], len(best_row["folds"]), cv_s)
    return heads, info


METHODS.register("auto")(fit_auto)
