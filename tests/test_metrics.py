"""Alignment measures: hand-computed cases, known invariances, and a conformance check of the registry."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from modalign.metrics import METRICS, REPRESENTATION_METRICS, get_metric, gram_volumes, mutual_knn, rice_k
from modalign.metrics.base import PairMetric
from modalign.metrics.rsa import average_ranks


def _angles(*degrees: float) -> np.ndarray:
    r = np.radians(degrees)
    return np.stack([np.cos(r), np.sin(r)], axis=1)


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def related(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two representations sharing a 6-D latent, through different random maps plus noise."""
    z = rng.normal(size=(120, 6))
    a = z @ rng.normal(size=(6, 40)) + 0.3 * rng.normal(size=(120, 40))
    b = np.tanh(z @ rng.normal(size=(6, 25))) + 0.3 * rng.normal(size=(120, 25))
    return a, b


# ---------------------------------------------------------------- hand-computed cases
def test_mutual_knn_hand_case() -> None:
    a = _angles(0, 10, 90, 100)  # nearest neighbours: 0↔1, 2↔3
    b = _angles(0, 10, 90, 180)  # 0↔1, 2→1 (80°), 3→2 (90°)
    assert mutual_knn(a, b, k=1) == pytest.approx(0.75)
    assert get_metric("mutual_knn", k=1)(a, b) == pytest.approx(0.75)
    assert mutual_knn(a, _angles(0, 90, 10, 100), k=1) == 0.0


def test_cka_hand_case() -> None:
    x, y = np.array([[1.0], [2.0], [3.0]]), np.array([[1.0], [3.0], [2.0]])
    # centred: x = (−1, 0, 1), y = (−1, 1, 0): ‖yᵀx‖² = 1, ‖xᵀx‖ = ‖yᵀy‖ = 2
    assert get_metric("cka")(x, y) == pytest.approx(0.25)


def _naive_hsic(k: np.ndarray, l_: np.ndarray, unbiased: bool) -> float:
    n = len(k)
    if not unbiased:
        h = np.eye(n) - np.ones((n, n)) / n
        return float(np.trace(k @ h @ l_ @ h)) / (n - 1) ** 2
    kt, lt = k - np.diag(np.diag(k)), l_ - np.diag(np.diag(l_))
    one = np.ones(n)
    return float(np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
                 - 2 / (n - 2) * (one @ kt @ lt @ one)) / (n * (n - 3))


@pytest.mark.parametrize("name, unbiased", [("cka", False), ("cka_unbiased", True)])
def test_cka_matches_the_kernel_formula(name: str, unbiased: bool, rng: np.random.Generator) -> None:
    x, y = rng.normal(size=(9, 5)), rng.normal(size=(9, 3)) + 2.0
    xc, yc = x - x.mean(0), y - y.mean(0)  # the estimators run on centred features (Kornblith et al.)
    k, l_ = xc @ xc.T, yc @ yc.T
    expected = _naive_hsic(k, l_, unbiased) / math.sqrt(_naive_hsic(k, k, unbiased) * _naive_hsic(l_, l_, unbiased))
    assert get_metric(name)(x, y) == pytest.approx(expected, rel=1e-9)
    # wide inputs take the n×n path of ‖XᵀY‖²_F: same value
    xw, yw = np.hstack([x[:6], rng.normal(size=(6, 50))]), y[:6]
    xwc, ywc = xw - xw.mean(0), yw - yw.mean(0)
    kw, lw = xwc @ xwc.T, ywc @ ywc.T
    exp_w = _naive_hsic(kw, lw, unbiased) / math.sqrt(_naive_hsic(kw, kw, unbiased) * _naive_hsic(lw, lw, unbiased))
    assert get_metric(name)(xw, yw) == pytest.approx(exp_w, rel=1e-9)


def test_rsa_hand_case() -> None:
    # D(a) over pairs (01, 02, 12) = (0.5, 2, 1.5) → ranks (1, 3, 2); D(b) = (1, 1.5, 0.134) → ranks (2, 3, 1)
    a, b = _angles(0, 60, 180), _angles(0, 90, 120)
    assert get_metric("rsa")(a, b) == pytest.approx(0.5)
    np.testing.assert_array_equal(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])


def test_svcca_hand_case() -> None:
    u1, u2, w = np.array([1.0, -1, 1, -1]), np.array([1.0, 1, -1, -1]), np.array([1.0, -1, -1, 1])
    x, y = np.stack([u1, u2], 1), np.stack([3 * u1, w], 1)
    # canonical correlations of span{u1, u2} and span{u1, w}: 1 (u1) and 0 (u2 ⟂ w)
    assert get_metric("svcca", keep_variance=1.0, rows_per_dim=0)(x, y) == pytest.approx(0.5)


def test_svcca_does_not_saturate_on_few_rows(rng: np.random.Generator) -> None:
    a, b = rng.normal(size=(40, 30)), rng.normal(size=(40, 30))
    assert get_metric("svcca", rows_per_dim=0)(a, b) > 0.6  # 30 dims from 40 rows: CCA overfits
    assert get_metric("svcca")(a, b) < 0.5


def test_space_measures_hand_cases() -> None:
    assert get_metric("modality_gap")(np.array([[2.0, 0], [1, 0]]), np.array([[0.0, 5]])) == pytest.approx(math.sqrt(2))
    assert get_metric("alignment")(np.array([[1.0, 0]]), np.array([[0.0, 3]])) == pytest.approx(2.0)
    assert get_metric("uniformity")(_angles(0, 180)) == pytest.approx(-8.0)
    assert get_metric("uniformity")(_angles(0, 120, 240)) == pytest.approx(-6.0)
    np.testing.assert_allclose(gram_volumes(_angles(0, 0), _angles(30, 90)), [0.5, 1.0])
    e = np.eye(3)
    assert get_metric("gram_volume")(e[[0]], e[[1]], e[[2]]) == pytest.approx(1.0)
    assert get_metric("gram_volume")(e[[0]], 2 * e[[0]], e[[0]]) == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- invariances
@pytest.mark.parametrize("name", ["cka", "cka_unbiased", "rsa", "svcca"])
def test_invariant_to_orthogonal_maps_and_isotropic_scaling(name: str, related: tuple[np.ndarray, np.ndarray],
                                                            rng: np.random.Generator) -> None:
    a, b = related
    q, _ = np.linalg.qr(rng.normal(size=(a.shape[1], a.shape[1])))
    metric = get_metric(name)
    base = metric(a, b)
    assert metric(7.5 * a @ q, b) == pytest.approx(base, abs=1e-9)
    assert metric(a, 0.01 * b) == pytest.approx(base, abs=1e-9)


def test_cka_is_not_invariant_to_anisotropic_scaling(related: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = related
    stretched = a * np.linspace(0.1, 10, a.shape[1])
    assert abs(get_metric("cka")(stretched, b) - get_metric("cka")(a, b)) > 1e-3


@pytest.mark.parametrize("name", REPRESENTATION_METRICS)
def test_identical_inputs_score_one_and_related_beat_unrelated(name: str, related: tuple[np.ndarray, np.ndarray],
                                                               rng: np.random.Generator) -> None:
    a, b = related
    metric = get_metric(name)
    assert metric(a, a) == pytest.approx(1.0)
    noise = rng.normal(size=b.shape)
    assert metric(a, b) > metric(a, noise) + 0.05


def test_mutual_knn_function_and_class_agree(related: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = related
    assert rice_k(len(a)) == math.ceil(2 * len(a) ** (1 / 3))
    assert get_metric("mutual_knn")(a, b) == mutual_knn(a, b)
    assert mutual_knn(a, a) == 1.0


# ---------------------------------------------------------------- conformance over the registry
@pytest.mark.parametrize("name", METRICS.names())
def test_every_registered_metric(name: str, rng: np.random.Generator) -> None:
    metric = get_metric(name)
    arity = metric.arity or 3
    dims = [8] * arity if metric.same_space or not isinstance(metric, PairMetric) else [8, 5][:arity]
    xs = [rng.normal(size=(30, d)) for d in dims]
    value = metric(*xs)
    assert isinstance(value, float) and math.isfinite(value)
    module_doc = sys.modules[type(metric).__module__].__doc__ or ""
    assert "=" in module_doc, f"{name}: its module docstring must state the formula"
    with pytest.raises(ValueError):
        metric(*xs, *xs) if metric.arity else metric(xs[0])
    with pytest.raises(ValueError, match="2-D"):
        metric(*[x.ravel() for x in xs])
    if metric.paired and arity >= 2:
        with pytest.raises(ValueError, match="paired"):
            metric(xs[0][:10], *xs[1:])
    if isinstance(metric, PairMetric):  # prepare/compare split used by the probe gives the same number
        assert metric.compare(metric.prepare(xs[0]), metric.prepare(xs[1])) == pytest.approx(value)
