"""Ensemble head: N heads of one modality (trained with different seeds) as one.

Its output is the mean of the members' L2-normalised outputs. Each member keeps its own conditioning
and weights; averaging unit vectors rather than weights because independently seeded contrastive
heads land in differently rotated spaces (the loss is invariant to a shared rotation), so their
weights do not average into a head (measured in docs/alignment.md, ``--seeds``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from modalign.align.heads.base import HEADS, Head

#: members an ensemble may hold (a tampered config cannot ask for a million heads)
MAX_MEMBERS = 64


@HEADS.register("ensemble")
class EnsembleHead(Head):
    name = "ensemble"

    def __init__(self, in_dim: int, out_dim: int, members: Sequence[dict[str, Any] | Head] | None = None) -> None:
        super().__init__(in_dim, out_dim)
        if members is None:  # two fresh linear heads (what HEADS.create("ensemble", ...) alone gives)
            members = [{"name": "linear", "in_dim": in_dim, "out_dim": out_dim}] * 2
        if not 1 <= len(members) <= MAX_MEMBERS:
            raise ValueError(f"an ensemble holds 1..{MAX_MEMBERS} heads, got {len(members)}")
        built = [m if isinstance(m, Head) else _build(m) for m in members]
        for h in built:
            if isinstance(h, EnsembleHead):
                raise ValueError("an ensemble cannot hold another ensemble")
            if (h.in_dim, h.out_dim) != (self.in_dim, self.out_dim):
                raise ValueError(f"ensemble member maps {h.in_dim}->{h.out_dim}, the ensemble "
                                 f"{self.in_dim}->{self.out_dim}")
        self.members = nn.ModuleList(built)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "in_dim": self.in_dim, "out_dim": self.out_dim,
                "members": [h.config() for h in self.members]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [nn.functional.normalize(h(x), dim=-1) for h in self.members]
        return torch.stack(outs).mean(0)

    def fit_input_stats(self, features: Any, chunk: int | None = None) -> None:
        for h in self.members:
            h.fit_input_stats(features, chunk)

    def auxiliary_loss(self) -> torch.Tensor | None:
        losses = [a for a in (h.auxiliary_loss() for h in self.members) if a is not None]
        return torch.stack(losses).sum() if losses else None

    @classmethod
    def of(cls, heads: Sequence[Head]) -> EnsembleHead:
        first = heads[0]
        return cls(first.in_dim, first.out_dim, list(heads)).eval()


def _build(config: dict[str, Any]) -> Head:
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError("an ensemble member must be a head config with a name")
    cfg = dict(config)
    return HEADS.create(cfg.pop("name"), **cfg)
