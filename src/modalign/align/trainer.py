"""Mini-batch training of heads on cached features, with early stopping on a validation split."""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from modalign.align.heads.base import Head
from modalign.align.losses.base import PairBatch, PairLoss
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


def train_pairwise(
    heads: dict[str, Head],
    loss: PairLoss,
    train: TrainData,
    val: TrainData | None,
    settings: TrainerSettings,
    progress: Progress | None = None,
    extra_loss: Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor], np.ndarray, int], torch.Tensor]
    | None = None,
) -> TrainResult:
    """Sum ``loss`` over every modality pair present in a batch; keep the best epoch on validation.

    ``extra_loss(z, x, rows, step)`` may add a term over all modalities of a batch (STRUCTURE,
    intra-modal...). Heads must already have their input statistics fitted.
    """
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    params = [p for h in heads.values() for p in h.parameters() if p.requires_grad]
    params += [p for p in loss.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every head is locked")
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    pairs = train.pairs()
    feats = {m: torch.as_tensor(x, dtype=torch.float32) for m, x in train.features.items()}
    groups = torch.as_tensor(train.groups, dtype=torch.int64)
    usable = np.flatnonzero(np.sum([train.present[m] for m in train.features], axis=0) >= 2)
    if len(usable) < 2:
        raise ValueError("fewer than 2 rows have two modalities: nothing to align")

    best = (-1.0, -1, copy.deepcopy({m: h.state_dict() for m, h in heads.items()}), copy.deepcopy(loss.state_dict()))
    history: list[dict[str, float]] = []
    step = 0
    stale = 0
    for epoch in range(settings.epochs):
        for h in heads.values():
            h.train()
        order = rng.permutation(usable)
        losses = []
        for start in range(0, len(order), settings.batch_size):
            rows = order[start : start + settings.batch_size]
            if len(rows) < 2:
                continue
            z = {m: F.normalize(heads[m](feats[m][rows]), dim=1) for m in heads}
            total = torch.zeros(())
            terms = 0
            for a, b in pairs:
                both = train.present[a][rows] & train.present[b][rows]
                if both.sum() < 2:
                    continue
                idx = torch.as_tensor(np.flatnonzero(both))
                batch = PairBatch(groups=groups[rows][idx], xa=feats[a][rows][idx], xb=feats[b][rows][idx], step=step)
                total = total + loss(z[a][idx], z[b][idx], batch)
                terms += 1
            if terms == 0:
                continue
            total = total / terms
            if extra_loss is not None:
                total = total + extra_loss(z, {m: feats[m][rows] for m in heads}, rows, step)
            for h in heads.values():
                aux = h.auxiliary_loss()
                if aux is not None:
                    total = total + aux
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            losses.append(float(total.detach()))
            step += 1
        for h in heads.values():
            h.eval()
        val_score = validation_score(heads, val, val.pairs()) if val is not None and len(val) else float("nan")
        history.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"),
                        "val_R@1": val_score})
        if progress is not None:
            progress("train", epoch + 1, settings.epochs)
        score = val_score if not np.isnan(val_score) else -float(np.mean(losses) if losses else 0.0)
        if score > best[0] + 1e-6 or best[1] < 0:
            best = (score, epoch, copy.deepcopy({m: h.state_dict() for m, h in heads.items()}),
                    copy.deepcopy(loss.state_dict()))
            stale = 0
        else:
            stale += 1
            if stale >= settings.patience:
                log.info("early stop at epoch %d (best %d, val R@1 %.4f)", epoch, best[1], best[0])
                break
    for m, h in heads.items():
        h.load_state_dict(best[2][m])
        h.eval()
    loss.load_state_dict(best[3])
    if progress is not None:
        progress("train", settings.epochs, settings.epochs)
    return TrainResult(best_epoch=best[1], best_val=best[0], history=history)
