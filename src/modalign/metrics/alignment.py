"""Alignment (Wang & Isola 2020): expected distance between the embeddings of a positive pair.

    align(A, B) = E_i ‖â_i − b̂_i‖^α,   α = 2 by default, â = a / ‖a‖

0 for perfectly aligned pairs, 4 for antipodal ones. Lower is better.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from modalign.metrics.base import METRICS, Metric, normalize_rows


@METRICS.register("alignment")
class Alignment(Metric):
    name: ClassVar[str] = "alignment"
    same_space: ClassVar[bool] = True
    higher_is_better: ClassVar[bool] = False
    min_rows: ClassVar[int] = 1

    def __init__(self, alpha: float = 2.0) -> None:
        self.alpha = alpha

    def score(self, *xs: np.ndarray) -> float:
        a, b = (normalize_rows(x) for x in xs)
        return float(np.mean(np.linalg.norm(a - b, axis=1) ** self.alpha))
