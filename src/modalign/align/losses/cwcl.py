"""CWCL (Srinivasa et al. 2023): contrastive targets weighted by the frozen side's own similarities."""

from __future__ import annotations

import math

import torch
from torch import nn

from modalign.align.losses.base import LOSSES, PairBatch, PairLoss, centered_unit, soft_cross_entropy


@LOSSES.register("cwcl")
class CWCLLoss(PairLoss):
    """L_{U→V} = −(1/N) Σ_i Σ_j w_ij log softmax_j(⟨z_ui, z_vj⟩/τ) / Σ_j w_ij, both directions.

    w_ij = ((cos(p_i, p_j) + 1) / 2)^power from the frozen features p of ``weights_from`` (``a``,
    ``b``, or ``mean`` of both sides' weights); cosines are taken on batch-centred features, since raw
    encoder features share a large common direction that would make every w_ij ≈ 1. ``power`` = 1 is
    the paper's weighting; larger powers sharpen it towards CLIP (the w = I limit). With power 1 an
    unrelated pair still gets w ≈ ½, so in a batch of 256 the true partner holds < 1% of the target
    mass and retrieval collapses (measured in docs/alignment.md); the default 8 leaves unrelated
    pairs ≈ 0.4% each and keeps the soft credit for near neighbours. Rows of one group always get
    w = 1 (multi-positive, as InfoNCE).
    """

    name = "cwcl"

    def __init__(self, temperature: float = 0.07, learn_temperature: bool = True, power: float = 8.0,
                 weights_from: str = "mean") -> None:
        super().__init__()
        if weights_from not in ("a", "b", "mean"):
            raise ValueError(f"weights_from must be 'a', 'b' or 'mean', got {weights_from!r}")
        self.temperature = float(temperature)
        self.learn_temperature = bool(learn_temperature)
        self.power = float(power)
        self.weights_from = weights_from
        init = torch.tensor(math.log(1.0 / temperature))
        if learn_temperature:
            self.log_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_scale", init)

    def hyperparameters(self) -> dict[str, object]:
        return {"temperature": self.temperature, "learn_temperature": self.learn_temperature,
                "power": self.power, "weights_from": self.weights_from}

    def summary(self) -> dict[str, float]:
        return {"temperature_final": float(1.0 / self.scale().detach())}

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    def weights(self, batch: PairBatch) -> torch.Tensor:
        sides = {"a": [batch.xa], "b": [batch.xb], "mean": [batch.xa, batch.xb]}[self.weights_from]
        if any(x is None for x in sides):
            raise ValueError("cwcl needs the frozen features of the pair")
        ws = []
        for x in sides:
            p = nn.functional.normalize(centered_unit(x), dim=1)  # type: ignore[arg-type]
            ws.append(((p @ p.T + 1) / 2).clamp(min=0) ** self.power)
        w = torch.stack(ws).mean(0)
        return torch.where(batch.positives(), torch.ones_like(w), w).detach()

    def forward(self, za: torch.Tensor, zb: torch.Tensor, batch: PairBatch) -> torch.Tensor:
        logits = self.scale() * za @ zb.T
        w = self.weights(batch)
        # each direction normalises its own rows: (w / w.sum(1)).T has column sums of 1, not row sums, and
        # would give the V→U targets a total mass of 0.8–1.2 instead of a distribution
        return 0.5 * (soft_cross_entropy(logits, w / w.sum(1, keepdim=True))
                      + soft_cross_entropy(logits.T, w.T / w.T.sum(1, keepdim=True)))
