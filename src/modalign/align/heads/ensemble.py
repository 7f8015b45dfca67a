"""Ensemble head: N heads of one modality (trained with different seeds) as one.

Independently seeded contrastive heads land in differently rotated spaces (the loss is invariant to a
rotation shared by all modalities; measured: the unit outputs of two seeds have mean cosine ~0.01), so
neither their outputs nor their weights can be averaged as they are. Each member therefore carries a
rotation (``rotations[i]``, fitted by ``align_members``: orthogonal Procrustes of its outputs onto the
first member's, on the training rows of every modality at once), and the ensemble's output is the mean
of the members' rotated L2-normalised outputs.
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
    assembled = True

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
        self.register_buffer("rotations", torch.eye(self.out_dim).repeat(len(built), 1, 1))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "in_dim": self.in_dim, "out_dim": self.out_dim,
                "members": [h.config() for h in self.members]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [nn.functional.normalize(h(x), dim=-1) @ r for h, r in zip(self.members, self.rotations, strict=True)]
        return torch.stack(outs).mean(0)

    def fit_input_stats(self, features: Any, chunk: int | None = None) -> None:
        for h in self.members:
            h.fit_input_stats(features, chunk)

    def auxiliary_loss(self) -> torch.Tensor | None:
        losses = [a for a in (h.auxiliary_loss() for h in self.members) if a is not None]
        return torch.stack(losses).sum() if losses else None

    @classmethod
    def of(cls, heads: Sequence[Head], rotations: torch.Tensor | None = None) -> EnsembleHead:
        first = heads[0]
        head = cls(first.in_dim, first.out_dim, list(heads)).eval()
        if rotations is not None:
            head.rotations.copy_(rotations)
        return head


@torch.no_grad()
def align_members(outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """(N, d, d) rotations R_i minimising ‖Z_i R_i − Z_0‖ (orthogonal Procrustes; R_0 = I).

    ``outputs[i]``: member i's unit outputs on the same rows (every modality's rows stacked, so one
    rotation serves all of a seed's heads)."""
    ref = outputs[0].double()
    rots = []
    for z in outputs:
        u, _, vt = torch.linalg.svd(z.double().T @ ref)
        rots.append((u @ vt).float())
    rots[0] = torch.eye(ref.shape[1])
    return torch.stack(rots)


def _build(config: dict[str, Any]) -> Head:
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError("an ensemble member must be a head config with a name")
    cfg = dict(config)
    return HEADS.create(cfg.pop("name"), **cfg)
