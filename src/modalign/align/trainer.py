"""Mini-batch training of heads on cached features, with early stopping on a validation split."""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from modalign.align.ddp import launched, train_ddp
from modalign.align.heads.base import Head
from modalign.align.losses.base import Batch, Loss
from modalign.align.train_data import (  # noqa: F401  (re-exported: the trainer's public names)
    TrainData,
    TrainerSettings,
    feature_source,
    resolve_device,
    resolved_for,
    step_schedule,
    take_rows,
)
from modalign.metrics.ranks import first_positive_ranks

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclass
class TrainResult:
    best_epoch: int
    best_val: float
    history: list[dict[str, float]] = field(default_factory=list)


#: validation R@1 is scored on at most this many rows per pair (a fixed, seeded subset): scoring is
#: rows² dot products every epoch (10¹⁰ for the 100k validation rows of a 1M-row dataset)
MAX_VAL_ROWS = 5_000


def _device_of(module: torch.nn.Module) -> torch.device:
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def validation_score(heads: dict[str, Head], data: TrainData, pairs: list[tuple[str, str]],
                     max_rows: int | None = None, metric: str = "R@1") -> float:
    """Mean R@1 (or MRR) over both directions of every pair (same group = relevant), on ≤ ``max_rows``
    rows (default ``MAX_VAL_ROWS``). Embeds on the heads' device; the ranking runs in numpy."""
    scores = validation_scores(heads, data, pairs, max_rows, metric)
    return float(np.mean(list(scores.values()))) if scores else float("nan")


def validation_scores(heads: dict[str, Head], data: TrainData, pairs: list[tuple[str, str]],
                      max_rows: int | None = None, metric: str = "R@1") -> dict[str, float]:
    """``validation_score`` per direction: ``{"a->b": R@1, "b->a": R@1, ...}`` (pairs with < 2 rows left out)."""
    max_rows = max_rows or MAX_VAL_ROWS
    scores: dict[str, float] = {}
    with torch.no_grad():
        for a, b in pairs:
            rows = data.present[a] & data.present[b]
            if rows.sum() < 2:
                continue
            idx = scored_rows(rows, max_rows)
            rows = np.zeros_like(rows)
            rows[idx] = True
            za = F.normalize(heads[a](take_rows(data.features[a], idx, _device_of(heads[a]))), dim=1).cpu().numpy()
            zb = F.normalize(heads[b](take_rows(data.features[b], idx, _device_of(heads[b]))), dim=1).cpu().numpy()
            if metric == "MRR":  # smoother than R@1 on a few dozen rows: every rank moves it
                rel = data.groups[rows][:, None] == data.groups[rows][None, :]
                sim = za @ zb.T
                both = [float(np.mean(1.0 / first_positive_ranks(s, r))) for s, r in ((sim, rel), (sim.T, rel.T))]
            else:
                both = both_ways_r_at_1(za, zb, data.groups[rows])
            scores[f"{a}->{b}"], scores[f"{b}->{a}"] = both
    return scores


def scored_rows(rows: np.ndarray, max_rows: int | None = None) -> np.ndarray:
    """Indices of the rows of mask ``rows`` that validation scores: all, or past ``max_rows`` (default
    ``MAX_VAL_ROWS``) a fixed seeded subset, the same every epoch so that scores stay comparable."""
    max_rows = max_rows or MAX_VAL_ROWS
    idx = np.flatnonzero(rows)
    if len(idx) > max_rows:
        idx = np.sort(np.random.default_rng(0).choice(idx, max_rows, replace=False))
    return idx


def chance_r_at_1(groups: np.ndarray) -> float:
    """Expected R@1 of a random ranking when every row of a gallery of ``groups`` is a query and the rows of
    its own group are relevant: the mean over queries of (relevant rows / gallery size)."""
    if not len(groups):
        return float("nan")
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return float(np.mean(counts[inverse]) / len(groups))


def both_ways_r_at_1(za: np.ndarray, zb: np.ndarray, groups: np.ndarray, chunk: int = 1024) -> list[float]:
    """R@1 a→b and b→a. Past ``chunk`` rows the queries go ``chunk`` at a time, so memory is chunk × n."""
    if len(za) <= chunk:  # one block, computed exactly as before chunking existed (same floats, same fits)
        rel = groups[:, None] == groups[None, :]
        sim = za @ zb.T
        return [float(np.mean(first_positive_ranks(s, r) == 1)) for s, r in ((sim, rel), (sim.T, rel.T))]
    out = []
    for queries, docs in ((za, zb), (zb, za)):
        hits = 0
        for start in range(0, len(queries), chunk):
            rel = groups[start : start + chunk, None] == groups[None, :]
            hits += int(np.sum(first_positive_ranks(queries[start : start + chunk] @ docs.T, rel) == 1))
        out.append(hits / len(queries))
    return out


def _snapshot(heads: dict[str, Head], loss: Loss) -> tuple[dict[str, dict], dict]:
    """A copy of the weights on the CPU (device memory holds only the live heads)."""
    def grab(module: torch.nn.Module) -> dict:
        state = module.state_dict()
        if all(v.device.type == "cpu" for v in state.values()):
            return copy.deepcopy(state)
        return type(state)((k, v.detach().to("cpu", copy=True)) for k, v in state.items())

    return {m: grab(h) for m, h in heads.items()}, grab(loss)


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    # dropout draws from the generator of the device it runs on: on a GPU that is CUDA's, not the CPU's
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def backward_batch(heads: dict[str, Head], loss: Loss, sources: dict[str, Any], present: dict[str, np.ndarray],
                   groups: np.ndarray, rows: np.ndarray, trained: list[str], step: int = 0, chunks: int = 1,
                   fixed: frozenset[str] = frozenset(), device: str | torch.device = "cpu") -> float | None:
    """Loss of the batch ``rows`` + its gradients accumulated into the trained heads and the loss.

    ``chunks`` > 1 is GradCache (Gao et al. 2021): embed the batch chunk by chunk without a graph,
    score the loss on the whole batch (all in-batch negatives), keep dL/dz, then re-embed each chunk
    with a graph and backpropagate ``<z_chunk, dL/dz_chunk>``. The gradients equal the one-pass ones
    (dropout replays the same RNG state); MoE load balancing is averaged over the chunks' routers.
    Returns None when the batch holds nothing the loss can score. ``device``: where heads and loss live
    (sources already on it stay there; streamed rows are moved).
    """
    device = torch.device(device)
    x = {m: take_rows(sources[m], rows, device) for m in heads}
    with torch.no_grad():
        z = {m: F.normalize(heads[m](x[m]), dim=1) for m in heads if m not in trained}
    chunks = max(1, min(int(chunks), len(rows)))
    spans = [s for s in np.array_split(np.arange(len(rows)), chunks) if len(s)] if chunks > 1 else []
    states = []
    if spans:
        with torch.no_grad():
            parts: dict[str, list[torch.Tensor]] = {m: [] for m in trained}
            for span in spans:
                states.append(_rng_state(device))
                for m in trained:
                    parts[m].append(F.normalize(heads[m](x[m][span]), dim=1))
        z.update({m: torch.cat(parts[m]).requires_grad_() for m in trained})
    else:
        z.update({m: F.normalize(heads[m](x[m]), dim=1) for m in trained})
    batch = Batch(z={m: z[m] for m in heads}, x=x,
                  present={m: torch.as_tensor(present[m][rows], device=device) for m in heads},
                  groups=torch.as_tensor(groups[rows], device=device), step=step, frozen=frozenset(fixed))
    total = loss.batch_loss(batch)
    if total is None:
        return None
    if not spans:
        for m in trained:
            aux = heads[m].auxiliary_loss()
            if aux is not None:
                total = total + aux
        total.backward()
        return float(total.detach())
    total.backward()  # gradients of the loss's own parameters, and dL/dz of the cached embeddings
    value = float(total.detach())
    for span, state in zip(spans, states, strict=True):
        _set_rng_state(state, device)
        surrogate = torch.zeros((), device=device)
        for m in trained:
            grad = z[m].grad
            zc = F.normalize(heads[m](x[m][span]), dim=1)
            if grad is not None:
                surrogate = surrogate + (zc * grad[span]).sum()
            aux = heads[m].auxiliary_loss()
            if aux is not None:
                surrogate = surrogate + aux / len(spans)
                value += float(aux.detach()) / len(spans)
        if surrogate.requires_grad:
            surrogate.backward()
    return value


def train_heads(
    heads: dict[str, Head],
    loss: Loss,
    train: TrainData,
    val: TrainData | None,
    settings: TrainerSettings,
    progress: Progress | None = None,
    frozen: Iterable[str] = (),
    val_pairs: list[tuple[str, str]] | None = None,
) -> TrainResult:
    """Minimise ``loss.batch_loss`` over mini-batches of rows holding ≥ 2 modalities; keep the epoch
    with the best validation R@1 (``val_pairs``, default every pair), stop after ``patience`` stale ones.

    Heads in ``frozen`` (an existing space, progressive addition) and heads without parameters
    (locked) are not trained. Heads must already have their input statistics fitted. Each head's
    ``auxiliary_loss()`` (MoE load balancing) is added. Features may be arrays, memory maps or
    ``CachedMatrix`` (streamed from the feature cache: only each batch's rows are read).
    ``settings.workers`` > 1 trains on that many DDP processes for ``settings.epochs`` (no early stop).
    ``settings.device`` (one process): heads, loss, in-memory features and batches live there during
    training; the heads (best epoch) end on the CPU whatever the device.
    """
    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    fixed = {m for m, h in heads.items() if m in set(frozen) or not any(p.requires_grad for p in h.parameters())}
    trained = [m for m in heads if m not in fixed]
    params = [p for m in trained for p in heads[m].parameters() if p.requires_grad]
    params += [p for p in loss.parameters() if p.requires_grad]
    if not trained or not params:
        raise ValueError("nothing to train: every head is locked or frozen")
    # a row is useful when it pairs a trained modality with any other one
    n_mod = np.sum([train.present[m] for m in heads], axis=0)
    has_trained = np.any([train.present[m] for m in trained], axis=0)
    usable = np.flatnonzero((n_mod >= 2) & has_trained)
    if len(usable) < 2:
        raise ValueError("fewer than 2 rows pair a trained modality with another one: nothing to align")
    if settings.workers > 1 or _launched():  # spawned DDP workers, or this process is a rank of torchrun's job
        return _train_distributed(heads, loss, train, val, settings, progress, frozenset(fixed), val_pairs)
    try:
        for h in heads.values():
            h.to(device)
        loss.to(device)
        return _train_local(heads, loss, train, val, settings, progress, fixed, trained, params, usable, device,
                            val_pairs)
    finally:  # also after an error: a saved or reused model must not be left on the GPU
        for h in heads.values():
            h.to("cpu")
        loss.to("cpu")


def _train_local(heads: dict[str, Head], loss: Loss, train: TrainData, val: TrainData | None,
                 settings: TrainerSettings, progress: Progress | None, fixed: set[str], trained: list[str],
                 params: list[torch.nn.Parameter], usable: np.ndarray, device: torch.device,
                 val_pairs: list[tuple[str, str]] | None) -> TrainResult:
    """The one-process loop of ``train_heads`` on ``device`` (heads and loss already moved there)."""
    rng = np.random.default_rng(settings.seed)
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    if settings.steps is not None:
        return _train_steps(heads, loss, train, val, settings, progress, fixed, trained, opt, usable, device,
                            val_pairs, rng)
    sources, present, groups = _loop_inputs(heads, train, fixed, device)
    best_state = _snapshot(heads, loss)
    best = (-float("inf"), -1)
    history: list[dict[str, float]] = []
    step, stale = 0, 0
    for epoch in range(settings.epochs):
        for m in trained:
            heads[m].train()
        order = rng.permutation(usable)
        losses = []
        for start in range(0, len(order), settings.batch_size):
            rows = order[start : start + settings.batch_size]
            if len(rows) < 2:
                continue
            opt.zero_grad(set_to_none=True)
            value = backward_batch(heads, loss, sources, present, groups, rows, trained, step,
                                   settings.grad_chunks, frozenset(fixed), device)
            if value is None:
                continue
            opt.step()
            losses.append(value)
            step += 1
        for h in heads.values():
            h.eval()
        val_score = validation_score(heads, val, val_pairs or val.pairs()) if val is not None and len(val) \
            else float("nan")
        mean_loss = float(np.mean(losses)) if losses else float("nan")
        history.append({"epoch": epoch, "loss": mean_loss, "val_R@1": val_score})
        if progress is not None:
            progress("train", epoch + 1, settings.epochs)
        score = val_score if not np.isnan(val_score) else -mean_loss
        if score > best[0] + 1e-6:
            best = (score, epoch)
            best_state = _snapshot(heads, loss)
            stale = 0
        else:
            stale += 1
            if stale >= settings.patience:
                log.info("early stop at epoch %d (best %d, val R@1 %.4f)", epoch, best[1], best[0])
                break
    _restore(heads, loss, best_state, progress, settings.epochs)
    return TrainResult(best_epoch=best[1], best_val=best[0], history=history)


def _loop_inputs(heads: dict[str, Head], train: TrainData, fixed: set[str], device: torch.device
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]:
    """(feature sources on ``device``, presence masks, group ids) for a training loop; fixed heads in eval."""
    sources = {m: feature_source(x, device) for m, x in train.features.items()}  # arrays go to the device once
    present = {m: np.asarray(p, dtype=bool) for m, p in train.present.items()}
    for m in fixed:
        heads[m].eval()
    return sources, present, np.asarray(train.groups, dtype=np.int64)


def _restore(heads: dict[str, Head], loss: Loss, state: Any, progress: Progress | None, total: int) -> None:
    """Put back the best evaluation's weights and finish the progress bar."""
    for m, h in heads.items():
        h.load_state_dict(state[0][m])
        h.eval()
    loss.load_state_dict(state[1])
    if progress is not None:
        progress("train", total, total)


def _train_steps(heads: dict[str, Head], loss: Loss, train: TrainData, val: TrainData | None,
                 settings: TrainerSettings, progress: Progress | None, fixed: set[str], trained: list[str],
                 opt: torch.optim.Optimizer, usable: np.ndarray, device: torch.device,
                 val_pairs: list[tuple[str, str]] | None, rng: np.random.Generator) -> TrainResult:
    """The step-budget loop (``settings.steps``): warm-up + cosine learning rate, validation MRR every
    ``steps // 20`` steps (the history). Keeps the final weights, or with ``settings.restore_best`` stops
    after ``patience`` stale evaluations and keeps the best evaluation's."""
    total = int(settings.steps) if isinstance(settings.steps, int) else 0
    if total < 1:
        raise ValueError(f"steps must be at least 1, got {settings.steps}")
    warm = max(1, round(settings.warmup * total))

    def lr_factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + float(np.cos(np.pi * min(1.0, (step - warm) / max(1, total - warm)))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    sources, present, groups = _loop_inputs(heads, train, fixed, device)
    has_val = val is not None and len(val) > 0
    pairs = (val_pairs or val.pairs()) if has_val and val is not None else []
    every = max(1, total // 20)
    best_state = _snapshot(heads, loss)
    best = (float("inf"), 0)
    history: list[dict[str, float]] = []
    step, stale, losses = 0, 0, []
    while step < total:
        order = rng.permutation(usable)
        for start in range(0, len(order), settings.batch_size):
            rows = order[start : start + settings.batch_size]
            if len(rows) < 2 or step >= total:
                continue
            for m in trained:
                heads[m].train()
            opt.zero_grad(set_to_none=True)
            value = backward_batch(heads, loss, sources, present, groups, rows, trained, step,
                                   settings.grad_chunks, frozenset(fixed), device)
            if value is None:
                continue
            opt.step()
            sched.step()
            losses.append(value)
            step += 1
            if step % every and step < total:
                continue
            for h in heads.values():
                h.eval()
            assert val is not None or not has_val
            val_mrr = validation_score(heads, val, pairs, metric="MRR") if has_val and val is not None \
                else float("nan")
            mean_loss = float(np.mean(losses))
            losses = []
            history.append({"step": step, "loss": mean_loss, "val_MRR": val_mrr,
                            "lr": float(opt.param_groups[0]["lr"])})
            if progress is not None:
                progress("train", step, total)
            score = -val_mrr if not np.isnan(val_mrr) else mean_loss  # lower is better
            if not settings.restore_best:
                best = (score, step)  # the final weights are the result: nothing to restore
            elif score < best[0] - 1e-6:
                best, stale = (score, step), 0
                best_state = _snapshot(heads, loss)
            else:
                stale += 1
                if stale >= settings.patience:
                    log.info("early stop at step %d (best %d, val MRR %.4f)", step, best[1], -best[0])
                    step = total
                    break
    if settings.restore_best:
        _restore(heads, loss, best_state, progress, total)
    else:
        for h in heads.values():
            h.eval()
        if progress is not None:
            progress("train", total, total)
    best_val = validation_score(heads, val, pairs) if has_val and val is not None else -best[0]
    return TrainResult(best_epoch=best[1], best_val=best_val, history=history)


def _launched() -> bool:
    return launched() is not None


def _train_distributed(heads: dict[str, Head], loss: Loss, train: TrainData, val: TrainData | None,
                       settings: TrainerSettings, progress: Progress | None, fixed: frozenset[str],
                       val_pairs: list[tuple[str, str]] | None) -> TrainResult:
    """``settings.workers`` DDP processes (or the launcher's ranks) for fixed epochs, then one validation score."""
    if settings.grad_chunks > 1:
        raise ValueError("grad_chunks > 1 and workers > 1 do not combine: DDP already splits each batch over "
                         "the workers; use one of them")
    if progress is not None:
        progress("train", 0, settings.epochs)
    res = train_ddp(heads, loss, train, settings, workers=settings.workers, frozen=fixed)
    val_score = validation_score(heads, val, val_pairs or val.pairs()) if val is not None and len(val) \
        else float("nan")
    history = [{"epoch": i, "loss": value, "val_R@1": float("nan")} for i, value in enumerate(res.history)]
    if history:
        history[-1]["val_R@1"] = val_score
    if progress is not None:
        progress("train", settings.epochs, settings.epochs)
    last = len(history) - 1
    return TrainResult(best_epoch=last, best_val=val_score if not np.isnan(val_score) else -history[-1]["loss"],
                       history=history)


def train_pairwise(
    heads: dict[str, Head],
    loss: Loss,
    train: TrainData,
    val: TrainData | None,
    settings: TrainerSettings,
    progress: Progress | None = None,
) -> TrainResult:
    """Backward-compatible name of ``train_heads`` (a pair loss is summed over every modality pair)."""
    return train_heads(heads, loss, train, val, settings, progress)
