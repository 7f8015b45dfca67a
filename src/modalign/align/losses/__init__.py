"""Losses: one file each, registered in LOSSES; ``build_loss`` combines one with regularizers."""

from modalign.align.losses import cwcl, gram, infonce, intra, siglip, structure, symile  # noqa: F401
from modalign.align.losses.base import LOSSES, Batch, Loss, ModalityRegularizer, PairBatch, PairLoss
from modalign.align.losses.combined import CombinedLoss, build_loss

__all__ = ["LOSSES", "Batch", "CombinedLoss", "Loss", "ModalityRegularizer", "PairBatch", "PairLoss", "build_loss"]
