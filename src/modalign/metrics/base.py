"""The metric contract: a small class per measure, registered in ``METRICS`` by a stable name.

Inputs are (n, d) arrays; row i of every input describes the same item (paired) unless the metric
says otherwise. ``PairMetric`` splits the per-input work (``prepare``) from the comparison
(``compare``) so the layer probe prepares each layer once and compares every layer pair cheaply.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from modalign._registry import Registry


class Metric(ABC):
    """A scalar measure of one, two or a tuple of representations."""

    name: ClassVar[str]
    #: number of inputs; None = two or more (tuples of modalities)
    arity: ClassVar[int | None] = 2
    #: row i of every input is the same item (so inputs need equal row counts)
    paired: ClassVar[bool] = True
    #: inputs are embeddings of one shared space (equal dims); False = any two representations
    same_space: ClassVar[bool] = False
    higher_is_better: ClassVar[bool] = True
    #: the smallest row count the estimator is defined for
    min_rows: ClassVar[int] = 2

    def __call__(self, *xs: np.ndarray) -> float:
        arrays = [as_matrix(x, f"input {i + 1}") for i, x in enumerate(xs)]
        self._check(arrays)
        return float(self.score(*arrays))

    @abstractmethod
    def score(self, *xs: np.ndarray) -> float:
        """The measure on validated (n, d) float arrays."""

    def _check(self, xs: list[np.ndarray]) -> None:
        if self.arity is None:
            if len(xs) < 2:
                raise ValueError(f"{self.name} needs two or more inputs, got {len(xs)}")
        elif len(xs) != self.arity:
            raise ValueError(f"{self.name} needs {self.arity} input(s), got {len(xs)}")
        if self.paired and len({len(x) for x in xs}) > 1:
            raise ValueError(f"{self.name} needs paired rows, got row counts {[len(x) for x in xs]}")
        if self.same_space and len({x.shape[1] for x in xs}) > 1:
            raise ValueError(f"{self.name} compares embeddings of one space, got dims {[x.shape[1] for x in xs]}")
        if any(len(x) < self.min_rows for x in xs):
            raise ValueError(f"{self.name} needs at least {self.min_rows} rows, got {[len(x) for x in xs]}")


class PairMetric(Metric):
    """Two representations of the same n items, of any widths (what the layer probe scores)."""

    arity: ClassVar[int | None] = 2

    def prepare(self, x: np.ndarray) -> Any:
        """Per-input work (centering, neighbour lists, ranks ...); computed once per layer by the probe."""
        return x

    @abstractmethod
    def compare(self, a: Any, b: Any) -> float:
        """The measure between two prepared inputs of the same rows."""

    def score(self, *xs: np.ndarray) -> float:
        a, b = xs
        return self.compare(self.prepare(a), self.prepare(b))


METRICS: Registry[Metric] = Registry("metric")


def as_matrix(x: Any, what: str = "input") -> np.ndarray:
    """float64 (n, d) array; float64 because HSIC-style sums of n² terms lose precision in float32."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D (items, features) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: contains NaN or infinite values")
    return arr


def normalize_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def even_rows(n: int, max_rows: int | None) -> np.ndarray:
    """Evenly spaced row indices (the same for every input of n rows), for O(n²) measures."""
    if max_rows is None or n <= max_rows:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_rows).round().astype(np.int64))
