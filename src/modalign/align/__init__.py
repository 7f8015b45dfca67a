"""Alignment: heads, losses, closed-form solvers, the trainer and the AlignedModel."""

from modalign.align.fit import fit
from modalign.align.methods import METHODS, FitContext
from modalign.align.model import AlignedModel, Branch, load
from modalign.align.trainer import TrainData, TrainerSettings

__all__ = ["METHODS", "AlignedModel", "Branch", "FitContext", "TrainData", "TrainerSettings", "fit", "load"]
