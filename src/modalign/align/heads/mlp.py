"""Residual MLP head: a linear map into the shared space plus pre-LayerNorm residual MLP blocks."""

from __future__ import annotations

import torch
from torch import nn

from modalign.align.heads.base import HEADS, Head


class ResidualBlock(nn.Module):
    """h + Dropout(W2 GELU(W1 LN(h))); W2 starts at zero so a fresh block is the identity and the
    head starts as a linear map — with few pairs the non-linear part must earn its way in."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.drop(self.fc2(nn.functional.gelu(self.fc1(self.norm(h)))))


@HEADS.register("mlp")
class MLPHead(Head):
    name = "mlp"

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 1024, blocks: int = 1, dropout: float = 0.1,
                 input_dropout: float = 0.0, input_norm: str = "center") -> None:
        super().__init__(in_dim, out_dim, input_norm)
        if blocks < 0 or hidden < 1 or not 0 <= dropout < 1 or not 0 <= input_dropout < 1:
            raise ValueError(f"mlp head: bad hyper-parameters hidden={hidden} blocks={blocks} dropout={dropout}")
        self.hidden = int(hidden)
        self.blocks = int(blocks)
        self.dropout = float(dropout)
        self.input_dropout = float(input_dropout)
        self.in_drop = nn.Dropout(input_dropout)
        self.proj = nn.Linear(in_dim, out_dim)
        self.layers = nn.Sequential(*(ResidualBlock(out_dim, hidden, dropout) for _ in range(blocks)))

    def hyperparameters(self) -> dict[str, object]:
        return {"hidden": self.hidden, "blocks": self.blocks, "dropout": self.dropout,
                "input_dropout": self.input_dropout}

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.proj(self.in_drop(x)))
