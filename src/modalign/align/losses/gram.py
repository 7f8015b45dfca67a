"""GRAM (Cicchetti et al. 2025): contrast the volume spanned by a row's modalities, for 2..n of them."""

from __future__ import annotations

import torch

from modalign.align.losses.base import LOSSES, soft_cross_entropy, soft_targets
from modalign.align.losses.tuples import TupleLoss


def gram_volumes(anchor: torch.Tensor, others: list[torch.Tensor]) -> torch.Tensor:
    """(N, N) volumes √det G of the parallelotope of [anchor_i, o1_j, o2_j, ...] (unit vectors)."""
    n = len(anchor)
    cross = torch.stack([anchor @ o.T for o in others], dim=-1)  # (N_i, N_j, k-1)
    # (N_j, k-1, k-1): the other modalities' own Gram block, which does not depend on i
    inner = torch.stack([torch.stack([(o * p).sum(1) for p in others], -1) for o in others], -2)
    top = torch.cat([torch.ones(n, n, 1, dtype=anchor.dtype, device=anchor.device), cross], dim=-1)  # (N, N, k)
    bottom = torch.cat([cross.unsqueeze(-1), inner.unsqueeze(0).expand(n, -1, -1, -1)], dim=-1)
    gram = torch.cat([top.unsqueeze(2), bottom], dim=2)  # (N, N, k, k)
    return torch.linalg.det(gram).clamp(min=1e-8).sqrt()


@LOSSES.register("gram")
class GramLoss(TupleLoss):
    """logits_ij = −Vol(anchor_i, others_j)/τ; ½[CE over j + CE over i], positives by group.

    Rows are grouped by the modalities they hold, so a row with only two of them still trains that
    pair (the volume of two unit vectors is |sin θ|). ``anchor`` names the anchor modality (the
    first held one when absent, as for rows lacking it).

    The volume does not see signs (flipping any vector leaves det G unchanged) and is flat at
    θ = 90°, where freshly initialised heads start: alone it often settles on *anti*-parallel
    positives, useless for cosine retrieval. A small CLIP term on the pairs (``pairwise``, default
    0.1; 0 = pure GRAM) breaks that symmetry.

    ``label_smoothing`` moves that share of each row's target mass uniformly onto all columns. The
    GRAM authors' code trains with 0.1; our default is 0 (hard targets, as every other loss here), so
    that GRAM and InfoNCE differ only in the similarity they contrast.
    """

    name = "gram"

    def __init__(self, temperature: float = 0.07, learn_temperature: bool = True, anchor: str | None = None,
                 pairwise: float = 0.1, label_smoothing: float = 0.0) -> None:
        super().__init__(temperature, learn_temperature, pairwise)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"gram label_smoothing must be in [0, 1), got {label_smoothing}")
        self.anchor = anchor
        self.label_smoothing = float(label_smoothing)

    def hyperparameters(self) -> dict[str, object]:
        return {"temperature": self.temperature, "learn_temperature": self.learn_temperature, "anchor": self.anchor,
                "pairwise": self.pairwise, "label_smoothing": self.label_smoothing}

    def pattern_loss(self, mods: tuple[str, ...], z: dict[str, torch.Tensor], groups: torch.Tensor) -> torch.Tensor:
        anchor = self.anchor if self.anchor in mods else mods[0]
        logits = -self.scale() * gram_volumes(z[anchor], [z[m] for m in mods if m != anchor])
        positives = groups[:, None] == groups[None, :]
        eps = self.label_smoothing
        # each direction normalises its own rows (positives is symmetric, so transposing keeps them rows)
        targets = [(1 - eps) * soft_targets(p) + eps / len(p) for p in (positives, positives.T)]
        return 0.5 * (soft_cross_entropy(logits, targets[0]) + soft_cross_entropy(logits.T, targets[1]))
