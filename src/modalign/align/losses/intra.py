"""Intra-modal neighbourhood term ("Cross the Gap", Mistretta et al. 2025): aligning two modalities
must not scramble either one's own neighbourhoods, or image→image search gets worse than the frozen
encoder's."""

from __future__ import annotations

import torch

from modalign.align.losses.base import LOSSES, ModalityRegularizer, centered_unit


@LOSSES.register("intra")
class IntraModalLoss(ModalityRegularizer):
    """KL(P_X ‖ Q_Z) averaged over rows and modalities (SNE-style neighbourhood preservation).

    P_X = rowsoftmax(X Xᵀ/τ) on batch-centred unit frozen features, Q_Z = rowsoftmax(Z Zᵀ/τ) on the
    aligned embeddings, self-pairs excluded from both: the target is who-is-near-whom in the frozen
    space (fixed, no gradient). Unlike STRUCTURE it is one level and the forward KL, which penalises
    a Z that spreads a frozen neighbour far away.
    """

    name = "intra"

    def __init__(self, temperature: float = 0.05, warmup: int = 0) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.warmup = int(warmup)

    def hyperparameters(self) -> dict[str, object]:
        return {"temperature": self.temperature, "warmup": self.warmup}

    def regularize(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        n = len(z)
        eye = torch.eye(n, dtype=torch.bool, device=z.device)
        with torch.no_grad():
            cx = centered_unit(x)
            p = torch.softmax((cx @ cx.T / self.temperature).masked_fill(eye, float("-inf")), dim=1)
        cz = centered_unit(z)
        log_q = torch.log_softmax((cz @ cz.T / self.temperature).masked_fill(eye, float("-inf")), dim=1)
        log_p = p.clamp(min=1e-12).log()
        return (p * (log_p - log_q)).masked_fill(eye, 0.0).sum(1).mean()
