"""Symile (Saporta et al. 2024): contrast the multilinear inner product of a row's modalities."""

from __future__ import annotations

import math

import torch

from modalign.align.losses.base import LOSSES, soft_cross_entropy, soft_targets
from modalign.align.losses.tuples import TupleLoss


def _flat_targets(pos: torch.Tensor) -> torch.Tensor:
    flat = pos.reshape(len(pos), -1).to(torch.float32)
    return flat / flat.sum(1, keepdim=True)


@LOSSES.register("symile")
class SymileLoss(TupleLoss):
    """MIP(a, b, c) = Σ_d a_d b_d c_d; each modality in turn is the anchor against the element-wise
    product of the others; the mean of the per-anchor cross-entropies.

    Three modalities: O(N²) negatives — anchor row i is scored against the product of *every* pair
    (b_j, c_k) of the batch, i.e. all in-batch shufflings, from one (N, N, N) tensor of MIPs whose
    three axes give the three anchors' softmaxes. Four or more: O(N) negatives (the other rows'
    products). Two: the MIP is the inner product and the loss is CLIP. ``max_rows`` caps the rows of a
    3-way term (its cost is N³·d). Logits are scaled by √d/τ because the MIP of unit vectors
    shrinks like 1/√d.

    ``pairwise`` adds CLIP on every pair of modalities within the rows (0 = pure Symile): the MIP
    alone does not make pairwise cosines meaningful, and pairwise retrieval is what ``eval`` measures.
    """

    name = "symile"

    def __init__(self, temperature: float = 0.07, learn_temperature: bool = True, pairwise: float = 1.0,
                 max_rows: int = 128) -> None:
        super().__init__(temperature, learn_temperature, pairwise)
        self.max_rows = int(max_rows)

    def hyperparameters(self) -> dict[str, object]:
        return {"temperature": self.temperature, "learn_temperature": self.learn_temperature,
                "pairwise": self.pairwise, "max_rows": self.max_rows}

    def _three(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        n, d = a.shape
        scale = self.scale() * math.sqrt(d)
        mip = scale * ((a.unsqueeze(1) * b.unsqueeze(0)).reshape(n * n, d) @ c.T).reshape(n, n, n)
        same = groups[:, None] == groups[None, :]
        pos = same[:, :, None] & same[:, None, :]  # pos[i, j, k]: rows i, j, k show one concept
        losses = []
        for axis in range(3):  # anchor = a, b, c: its axis first, the other two flattened
            logits = mip.movedim(axis, 0).reshape(n, n * n)
            losses.append(soft_cross_entropy(logits, _flat_targets(pos.movedim(axis, 0))))
        return torch.stack(losses).mean()

    def _many(self, z: list[torch.Tensor], groups: torch.Tensor) -> torch.Tensor:
        d = z[0].shape[1]
        targets = soft_targets(groups[:, None] == groups[None, :])
        losses = []
        for i, anchor in enumerate(z):
            prod = torch.stack([v for j, v in enumerate(z) if j != i]).prod(0)
            losses.append(soft_cross_entropy(self.scale() * math.sqrt(d) * anchor @ prod.T, targets))
        return torch.stack(losses).mean()

    def pattern_loss(self, mods: tuple[str, ...], z: dict[str, torch.Tensor], groups: torch.Tensor) -> torch.Tensor:
        vecs = [z[m] for m in mods]
        if len(vecs) == 2:
            return self.clip(vecs[0], vecs[1], groups)
        if len(vecs) == 3:
            keep = slice(0, self.max_rows)
            return self._three(*(v[keep] for v in vecs), groups[keep])
        return self._many(vecs, groups)
