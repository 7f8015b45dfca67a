"""Modality gap (Liang et al. 2022): distance between the centroids of two modalities' embeddings.

    gap(A, B) = ‖ mean_i â_i − mean_j b̂_j ‖,   â = a / ‖a‖

0 when both modalities occupy the sphere alike, up to 2 when they sit at opposite poles. The two
sets need not be paired.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from modalign.metrics.base import METRICS, Metric, normalize_rows


@METRICS.register("modality_gap")
class ModalityGap(Metric):
    name: ClassVar[str] = "modality_gap"
    paired: ClassVar[bool] = False
    same_space: ClassVar[bool] = True
    higher_is_better: ClassVar[bool] = False
    min_rows: ClassVar[int] = 1

    def score(self, *xs: np.ndarray) -> float:
        a, b = (normalize_rows(x) for x in xs)
        return float(np.linalg.norm(a.mean(axis=0) - b.mean(axis=0)))
