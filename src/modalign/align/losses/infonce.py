"""Symmetric InfoNCE (CLIP) with a learnable temperature and multi-positive targets."""

from __future__ import annotations

import math

import torch
from torch import nn

from modalign.align.losses.base import LOSSES, PairBatch, PairLoss, soft_cross_entropy, soft_targets


@LOSSES.register("infonce")
class InfoNCELoss(PairLoss):
    """L = ½[CE(Za Zbᵀ/τ, T) + CE(Zb Zaᵀ/τ, Tᵀ)], T = identity, or uniform over same-group rows.

    ``log_scale`` = log(1/τ) is learnt when ``learn_temperature`` (clamped at 1/τ ≤ 100, as CLIP).
    """

    name = "infonce"

    def __init__(self, temperature: float = 0.07, learn_temperature: bool = True) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.learn_temperature = bool(learn_temperature)
        init = torch.tensor(math.log(1.0 / temperature))
        if learn_temperature:
            self.log_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_scale", init)

    def hyperparameters(self) -> dict[str, object]:
        return {"temperature": self.temperature, "learn_temperature": self.learn_temperature}

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    def summary(self) -> dict[str, float]:
        return {"temperature_final": float(1.0 / self.scale().detach())}

    def forward(self, za: torch.Tensor, zb: torch.Tensor, batch: PairBatch) -> torch.Tensor:
        logits = self.scale() * za @ zb.T
        targets = soft_targets(batch.positives())
        return 0.5 * (soft_cross_entropy(logits, targets) + soft_cross_entropy(logits.T, targets.T))
