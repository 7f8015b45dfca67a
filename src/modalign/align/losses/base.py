"""Loss contract: a module scoring a batch of aligned embeddings of two modalities.

``forward(za, zb, batch)`` receives L2-normalised embeddings (N, d) of the same N rows and a
``PairBatch`` with what some losses need: the frozen features (CWCL, STRUCTURE) and the rows'
group ids (rows of one group are positives of each other, e.g. four images of one concept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from modalign._registry import Registry


@dataclass
class PairBatch:
    groups: torch.Tensor  # (N,) int64 group index of each row
    xa: torch.Tensor | None = None  # frozen features of modality a (N, Da)
    xb: torch.Tensor | None = None
    step: int = 0

    def positives(self) -> torch.Tensor:
        """(N, N) bool: rows i and j show the same concept."""
        return self.groups[:, None] == self.groups[None, :]


class PairLoss(nn.Module):
    name: ClassVar[str]

    def hyperparameters(self) -> dict[str, Any]:
        return {}

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self.hyperparameters()}

    def forward(self, za: torch.Tensor, zb: torch.Tensor, batch: PairBatch) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


LOSSES: Registry[PairLoss] = Registry("loss")


def soft_targets(positives: torch.Tensor) -> torch.Tensor:
    """Row-normalised positive mask: every positive of a row shares its probability mass."""
    pos = positives.to(torch.float32)
    return pos / pos.sum(1, keepdim=True)
