"""``get_metric``: a measure by name, after every built-in measure has registered itself.

Its own module above the implementations (which import ``base``), so looking a measure up needs no
import of the package from inside ``base`` (that was an import cycle).
"""

from __future__ import annotations

from typing import Any

from modalign.metrics import alignment, cka, gram_volume, modality_gap, mutual_knn, rsa, svcca, uniformity  # noqa: F401
from modalign.metrics.base import METRICS, Metric


def get_metric(name: str, **options: Any) -> Metric:
    return METRICS.create(name, **options)
