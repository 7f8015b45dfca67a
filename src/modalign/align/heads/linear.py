"""Linear head (also the container for closed-form solutions: Procrustes, CCA, ridge)."""

from __future__ import annotations

import torch
from torch import nn

from modalign.align.heads.base import HEADS, Head


@HEADS.register("linear")
class LinearHead(Head):
    name = "linear"

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, input_norm: str = "center") -> None:
        super().__init__(in_dim, out_dim, input_norm)
        self.bias = bool(bias)
        self.linear = nn.Linear(in_dim, out_dim, bias=bias)

    def hyperparameters(self) -> dict[str, object]:
        return {"bias": self.bias}

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)
