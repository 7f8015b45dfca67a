"""Losses: one file each, registered in LOSSES."""

from modalign.align.losses import infonce  # noqa: F401
from modalign.align.losses.base import LOSSES, PairBatch, PairLoss

__all__ = ["LOSSES", "PairBatch", "PairLoss"]
