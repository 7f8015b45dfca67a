"""SigLIP: a sigmoid loss on every pair of the batch, with a learnable scale t and bias b."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from modalign.align.losses.base import LOSSES, PairBatch, PairLoss


@LOSSES.register("siglip")
class SigLIPLoss(PairLoss):
    """L = −(1/N) Σ_ij log σ(y_ij (t·⟨za_i, zb_j⟩ + b)), y_ij = +1 for same-group rows, else −1.

    t = exp(log_t) and b are learnt; the SigLIP paper starts them at t = 10, b = −10 so that the
    many negatives do not dominate the first steps.
    """

    name = "siglip"

    def __init__(self, scale: float = 10.0, bias: float = -10.0) -> None:
        super().__init__()
        self.init_scale = float(scale)
        self.init_bias = float(bias)
        self.log_t = nn.Parameter(torch.tensor(math.log(scale)))
        self.bias = nn.Parameter(torch.tensor(float(bias)))

    def hyperparameters(self) -> dict[str, object]:
        return {"scale": self.init_scale, "bias": self.init_bias}

    def summary(self) -> dict[str, float]:
        return {"scale_final": float(self.log_t.detach().exp()), "bias_final": float(self.bias.detach())}

    def forward(self, za: torch.Tensor, zb: torch.Tensor, batch: PairBatch) -> torch.Tensor:
        logits = self.log_t.clamp(max=math.log(100.0)).exp() * za @ zb.T + self.bias
        labels = batch.positives().to(logits.dtype) * 2 - 1
        return -F.logsigmoid(labels * logits).sum() / len(za)
