"""Alignment measures between representations of the same items; each registered in ``METRICS``.

Representations of any widths (what ``modalign probe`` scores layer by layer): ``mutual_knn``,
``cka``, ``cka_unbiased``, ``rsa``, ``svcca``. Embeddings of one shared space: ``modality_gap``,
``alignment``, ``uniformity`` (one set) and ``gram_volume`` (tuples of two or more modalities).
"""

from modalign.metrics import alignment, cka, gram_volume, modality_gap, rsa, svcca, uniformity  # noqa: F401
from modalign.metrics.base import METRICS, Metric, PairMetric
from modalign.metrics.gram_volume import gram_volumes
from modalign.metrics.mutual_knn import mutual_knn, rice_k
from modalign.metrics.registry import get_metric

#: the measures that compare two representations of any widths, in display order
REPRESENTATION_METRICS = ("mutual_knn", "cka", "cka_unbiased", "rsa", "svcca")

__all__ = ["METRICS", "REPRESENTATION_METRICS", "Metric", "PairMetric", "get_metric", "gram_volumes",
           "mutual_knn", "rice_k"]
