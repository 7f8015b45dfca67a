"""Paired data: manifests, validation, concept-disjoint splits and built-in dataset recipes."""

from modalign.data.dataset import PairedDataset, RowError, split_indices
from modalign.data.modality import language_of, modality_kind

__all__ = ["PairedDataset", "RowError", "language_of", "modality_kind", "split_indices"]
