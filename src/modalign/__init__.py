"""modalign: a shared embedding space from frozen unimodal encoders and a few thousand pairs."""

from modalign.align import AlignedModel, fit, load
from modalign.data import PairedDataset
from modalign.evaluation import evaluate

__version__ = "0.1.0"

__all__ = ["AlignedModel", "PairedDataset", "evaluate", "fit", "load"]
