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
    many negatives do not dominate the first steps. t is clamped at ``max_scale`` (100, as CLIP clamps
    its logit scale): without it a head that separates a small training set keeps raising t until the
    loss saturates and the gradients of the hard negatives vanish.
    """

    name = "siglip"

    def __init__(self, scale: float = 10.0, bias: float = -10.0, max_scale: float = 100.0) -> None:
        super().__init__()
        if not max_scale >= scale > 0:
            raise ValueError(f"siglip needs 0 < scale <= max_scale, got scale={scale}, max_scale={max_scale}")
        self.init_scale = float(scale)
        self.init_bias = float(bias)
        self.max_scale = float(max_scale)
        self.log_t = nn.Parameter(torch.tensor(math.log(scale)))
        self.bias = nn.Parameter(torch.tensor(float(bias)))

    def hyperparameters(self) -> dict[str, object]:
        return {"scale": self.init_scale, "bias": self.init_bias, "max_scale": self.max_scale}

    def summary(self) -> dict[str, float]:
        return {"scale_final": float(self.log_t.detach().exp()), "bias_final": float(self.bias.detach())}

    def forward(self, za: torch.Tensor, zb: torch.Tensor, batch: PairBatch) -> torch.Tensor:
        logits = self.log_t.clamp(max=math.log(self.max_scale)).exp() * za @ zb.T + self.bias
        labels = batch.positives().to(logits.dtype) * 2 - 1
        return -F.logsigmoid(labels * logits).sum() / len(za)
