"""STRUCTURE regularizer (Gröger et al. 2025): keep each modality's multi-scale neighbourhood structure."""

from __future__ import annotations

import torch

from modalign.align.losses.base import LOSSES, ModalityRegularizer, centered_unit

EPS = 1e-12


def transition(v: torch.Tensor, temperature: float) -> torch.Tensor:
    """P = rowsoftmax(V Vᵀ/τ) of row-normalised, batch-centred V (self-similarity included)."""
    c = centered_unit(v)
    return torch.softmax(c @ c.T / temperature, dim=1)


def kl_rows(m: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(M_i ‖ P_i)."""
    return (m * (m.clamp(min=EPS).log() - p.clamp(min=EPS).log())).sum(1).mean()


@LOSSES.register("structure")
class StructureLoss(ModalityRegularizer):
    """R = (1/L) Σ_l w_l · relu(d_l − margin) per modality, averaged over the modalities.

    P_X, P_Z are the transition matrices of the frozen features X and the aligned embeddings Z;
    level l compares their l-step random walks P^l (l = 1..L, coarser neighbourhoods as l grows).
    With M = ½(P_X^l + P_Z^l): d_l = ½[KL(M ‖ P_Z^l) + KL(M ‖ P_X^l)] — the KL(M ‖ ·) direction of
    the reference code (not the Jensen–Shannon KL(· ‖ M)); it is large wherever P_Z puts little mass
    on a neighbour the frozen space holds, so it penalises lost neighbours hardest.
    w_l = 1 (``weighting="uniform"``) or 1/l (``"inverse"``). λ and the warm-up live outside the
    term: λ is the weight in ``CombinedLoss``; the ramp min(1, step/warmup) is applied here.
    Reference settings: τ = 0.05, λ = 10, L ∈ {1, 2}.
    """

    name = "structure"

    def __init__(self, levels: int = 1, temperature: float = 0.05, margin: float = 0.0,
                 warmup: int = 0, weighting: str = "uniform") -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"structure levels must be ≥ 1, got {levels}")
        if weighting not in ("uniform", "inverse"):
            raise ValueError(f"structure weighting must be 'uniform' or 'inverse', got {weighting!r}")
        self.levels = int(levels)
        self.temperature = float(temperature)
        self.margin = float(margin)
        self.warmup = int(warmup)
        self.weighting = weighting

    def hyperparameters(self) -> dict[str, object]:
        return {"levels": self.levels, "temperature": self.temperature, "margin": self.margin,
                "warmup": self.warmup, "weighting": self.weighting}

    def regularize(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            px = transition(x, self.temperature)
        pz = transition(z, self.temperature)
        px_l, pz_l = px, pz
        total = torch.zeros((), dtype=z.dtype)
        for level in range(1, self.levels + 1):
            if level > 1:
                px_l, pz_l = px_l @ px, pz_l @ pz
            m = 0.5 * (px_l + pz_l)
            d = 0.5 * (kl_rows(m, pz_l) + kl_rows(m, px_l))
            w = 1.0 if self.weighting == "uniform" else 1.0 / level
            total = total + w * torch.relu(d - self.margin)
        return total / self.levels
