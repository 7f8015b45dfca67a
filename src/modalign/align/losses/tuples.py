"""Shared helpers of the losses that score several modalities of a row at once (GRAM, Symile)."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import torch
from torch import nn

from modalign.align.losses.base import Batch, Loss, soft_cross_entropy, soft_targets


def row_patterns(batch: Batch, min_size: int = 2) -> list[tuple[tuple[str, ...], torch.Tensor]]:
    """Rows grouped by the set of modalities they hold (sets of ≥ ``min_size``; ≥ 2 rows each)."""
    mods = batch.modalities
    present = torch.stack([batch.present[m] for m in mods], dim=1).cpu().numpy()
    by_set: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for row, flags in enumerate(present):
        key = tuple(m for m, f in zip(mods, flags, strict=True) if f)
        if len(key) >= min_size:
            by_set[key].append(row)
    return [(key, torch.as_tensor(rows)) for key, rows in by_set.items() if len(rows) >= 2]


class TupleLoss(Loss):
    """Shared by the tuple losses: a learnable inverse temperature (log-parametrised, clamped at 100)
    and an optional CLIP term on every pair of modalities within the rows (weight ``pairwise``)."""

    def __init__(self, temperature: float = 0.07, learn_temperature: bool = True, pairwise: float = 0.0) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.learn_temperature = bool(learn_temperature)
        self.pairwise = float(pairwise)
        init = torch.tensor(math.log(1.0 / temperature))
        if learn_temperature:
            self.log_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_scale", init)

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    def summary(self) -> dict[str, float]:
        return {"temperature_final": float(1.0 / self.scale().detach())}

    def clip(self, za: torch.Tensor, zb: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        logits = self.scale() * za @ zb.T
        t = soft_targets(groups[:, None] == groups[None, :])
        return 0.5 * (soft_cross_entropy(logits, t) + soft_cross_entropy(logits.T, t.T))

    def pairwise_loss(self, vecs: list[torch.Tensor], groups: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.clip(a, b, groups) for a, b in itertools.combinations(vecs, 2)]).mean()

    def pattern_loss(self, mods: tuple[str, ...], z: dict[str, torch.Tensor], groups: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def batch_loss(self, batch: Batch) -> torch.Tensor | None:
        total, rows = torch.zeros(()), 0
        for mods, idx in row_patterns(batch):
            z = {m: batch.z[m][idx] for m in mods}
            loss = self.pattern_loss(mods, z, batch.groups[idx])
            if self.pairwise > 0:
                loss = loss + self.pairwise * self.pairwise_loss([z[m] for m in mods], batch.groups[idx])
            total = total + len(idx) * loss
            rows += len(idx)
        return total / rows if rows else None
