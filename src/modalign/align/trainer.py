"""Mini-batch training of heads on cached features, with early stopping on a validation split."""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from modalign.align.heads.base import Head
from modalign.align.losses.base import Batch, Loss
from modalign.evaluation.retrieval import first_positive_ranks

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclass
class TrainData:
    """Frozen features of every modality over the same rows; ``present[m]`` marks rows that have m."""

    features: dict[str, np.ndarray]  # m -> (n_rows, D_m) (rows without m hold anything, e.g. zeros)
    present: dict[str, np.ndarray]  # m -> bool (n_rows,)
    groups: np.ndarray  # int64 (n_rows,)

    def __len__(self) -> int:
        return len(self.groups)

    def pairs(self) -> list[tuple[str, str]]:
        return list(itertools.combinations(self.features, 2))


@dataclass
class TrainerSettings:
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    patience: int = 10
    seed: int = 0


@dataclass
class TrainResult:
    best_epoch: int
    best_val: float
    history: list[dict[str, float]] = field(default_factory=list)


def validation_score(heads: dict[str, Head], data: TrainData, pairs: list[tuple[str, str]]) -> float:
    """Mean R@1 over both directions of every pair (same group = relevant)."""
    scores = []
    with torch.no_grad():
        for a, b in pairs:
            rows = data.present[a] & data.present[b]
            if rows.sum() < 2:
                continue
            za = F.normalize(heads[a](torch.as_tensor(data.features[a][rows])), dim=1).numpy()
            zb = F.normalize(heads[b](torch.as_tensor(data.features[b][rows])), dim=1).numpy()
            g = data.groups[rows]
            rel = g[:, None] == g[None, :]
            sim = za @ zb.T
            for s, r in ((sim, rel), (sim.T, rel.T)):
                scores.append(float(np.mean(first_positive_ranks(s, r) == 1)))
    return float(np.mean(scores)) if scores else float("nan")


def _snapshot(heads: dict[str, Head], loss: Loss) -> tuple[dict[str, dict], dict]:
    return copy.deepcopy({m: h.state_dict() for m, h in heads.items()}), copy.deepcopy(loss.state_dict())


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
    (locked) are not trained: their embeddings are computed once. Heads must already have their
    input statistics fitted. Each head's ``auxiliary_loss()`` (MoE load balancing) is added.
    """
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    fixed = {m for m, h in heads.items() if m in set(frozen) or not any(p.requires_grad for p in h.parameters())}
    trained = [m for m in heads if m not in fixed]
    params = [p for m in trained for p in heads[m].parameters() if p.requires_grad]
    params += [p for p in loss.parameters() if p.requires_grad]
    if not trained or not params:
        raise ValueError("nothing to train: every head is locked or frozen")
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    feats = {m: torch.as_tensor(x, dtype=torch.float32) for m, x in train.features.items()}
    present = {m: torch.as_tensor(p, dtype=torch.bool) for m, p in train.present.items()}
    groups = torch.as_tensor(train.groups, dtype=torch.int64)
    with torch.no_grad():
        for m in fixed:
            heads[m].eval()
        fixed_z = {m: F.normalize(heads[m](feats[m]), dim=1) for m in fixed}
    # a row is useful when it pairs a trained modality with any other one
    n_mod = np.sum([train.present[m] for m in heads], axis=0)
    has_trained = np.any([train.present[m] for m in trained], axis=0)
    usable = np.flatnonzero((n_mod >= 2) & has_trained)
    if len(usable) < 2:
        raise ValueError("fewer than 2 rows pair a trained modality with another one: nothing to align")

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
            rows = torch.as_tensor(order[start : start + settings.batch_size])
            if len(rows) < 2:
                continue
            z = {m: fixed_z[m][rows] if m in fixed else F.normalize(heads[m](feats[m][rows]), dim=1) for m in heads}
            batch = Batch(z=z, x={m: feats[m][rows] for m in heads}, present={m: present[m][rows] for m in heads},
                          groups=groups[rows], step=step, frozen=frozenset(fixed))
            total = loss.batch_loss(batch)
            if total is None:
                continue
            for m in trained:
                aux = heads[m].auxiliary_loss()
                if aux is not None:
                    total = total + aux
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            losses.append(float(total.detach()))
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
    for m, h in heads.items():
        h.load_state_dict(best_state[0][m])
        h.eval()
    loss.load_state_dict(best_state[1])
    if progress is not None:
        progress("train", settings.epochs, settings.epochs)
    return TrainResult(best_epoch=best[1], best_val=best[0], history=history)


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
