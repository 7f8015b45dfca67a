"""Losses against brute-force loops over the paper's formula (no shared code with the implementation)."""

from __future__ import annotations

import math

import torch

from modalign.align.losses.base import PairBatch
from modalign.align.losses.cwcl import CWCLLoss


def _brute_cwcl(za: torch.Tensor, zb: torch.Tensor, xa: torch.Tensor, xb: torch.Tensor, groups: list[int],
                tau: float, power: float) -> float:
    """½ (L_{A→B} + L_{B→A}); L_{U→V} = −(1/N) Σ_i Σ_j w_ij log softmax_j(⟨u_i, v_j⟩/τ) / Σ_k w_ik."""
    n = len(za)

    def unit_centered(x: torch.Tensor) -> list[list[float]]:
        rows = [[float(v) for v in r / r.norm()] for r in x.double()]
        mean = [sum(r[d] for r in rows) / n for d in range(len(rows[0]))]
        cen = [[r[d] - mean[d] for d in range(len(r))] for r in rows]
        return [[v / math.sqrt(sum(c * c for c in r)) for v in r] for r in cen]

    pa, pb = unit_centered(xa), unit_centered(xb)

    def w(i: int, j: int) -> float:
        if groups[i] == groups[j]:
            return 1.0
        ws = [max((sum(p[i][d] * p[j][d] for d in range(len(p[i]))) + 1) / 2, 0.0) ** power for p in (pa, pb)]
        return sum(ws) / 2

    def direction(u: torch.Tensor, v: torch.Tensor) -> float:
        total = 0.0
        for i in range(n):
            logits = [float(u[i].double() @ v[j].double()) / tau for j in range(n)]
            top = max(logits)
            log_z = top + math.log(sum(math.exp(x - top) for x in logits))
            weights = [w(i, j) for j in range(n)]
            total -= sum(wij * (logits[j] - log_z) for j, wij in enumerate(weights)) / sum(weights)
        return total / n

    return 0.5 * (direction(za, zb) + direction(zb, za))


def test_cwcl_equals_a_brute_force_of_its_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 7
    za = torch.nn.functional.normalize(torch.randn(n, 5, generator=gen), dim=1)
    zb = torch.nn.functional.normalize(torch.randn(n, 5, generator=gen), dim=1)
    xa, xb = torch.randn(n, 6, generator=gen), torch.randn(n, 4, generator=gen)
    groups = [0, 1, 2, 2, 3, 4, 5]  # rows 2 and 3 share a group: w = 1 both ways
    loss = CWCLLoss(temperature=0.1, learn_temperature=False, power=2.0, weights_from="mean")
    got = float(loss(za, zb, PairBatch(groups=torch.tensor(groups), xa=xa, xb=xb)))
    want = _brute_cwcl(za, zb, xa, xb, groups, tau=0.1, power=2.0)
    assert abs(got - want) < 1e-5, (got, want)


def test_cwcl_with_one_sided_weights_equals_brute_force_of_that_side() -> None:
    """weights_from="a": w is not symmetric in general once groups repeat; each direction still normalises
    its own rows."""
    gen = torch.Generator().manual_seed(1)
    n = 6
    za = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=1)
    zb = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=1)
    xa = torch.randn(n, 4, generator=gen)
    groups = [0, 0, 1, 2, 3, 4]
    loss = CWCLLoss(temperature=0.2, learn_temperature=False, power=1.0, weights_from="a")
    got = float(loss(za, zb, PairBatch(groups=torch.tensor(groups), xa=xa, xb=xa.clone())))
    want = _brute_cwcl(za, zb, xa, xa, groups, tau=0.2, power=1.0)  # both sides = a: the mean is a's weights
    assert abs(got - want) < 1e-5, (got, want)


def test_an_unknown_loss_option_is_an_error_not_a_default() -> None:
    import pytest

    from modalign.align.losses.combined import build_loss

    with pytest.raises(ValueError, match="unknown loss option 'temprature'"):
        build_loss("infonce", {"temprature": 0.01})
    with pytest.raises(ValueError, match=r"siglip.*no temperature"):
        build_loss("siglip", {"temperature": 0.01})
    assert build_loss("infonce", {"temperature": 0.01}).config()["temperature"] == 0.01
    assert build_loss("siglip", {"siglip_max_scale": 50.0}).config()["max_scale"] == 50.0
    assert build_loss("gram", {"gram_label_smoothing": 0.1}).config()["label_smoothing"] == 0.1


def _brute_infonce(za: torch.Tensor, zb: torch.Tensor, groups: list[int], tau: float) -> float:
    """½ (L_{A→B} + L_{B→A}); L_{U→V} = −(1/N) Σ_i (1/|P_i|) Σ_{j∈P_i} log softmax_j(⟨u_i, v_j⟩/τ),
    P_i = the rows of i's group (multi-positive targets spread uniformly over them)."""
    n = len(za)

    def direction(u: torch.Tensor, v: torch.Tensor) -> float:
        total = 0.0
        for i in range(n):
            logits = [float(u[i].double() @ v[j].double()) / tau for j in range(n)]
            top = max(logits)
            log_z = top + math.log(sum(math.exp(x - top) for x in logits))
            positives = [j for j in range(n) if groups[j] == groups[i]]
            total -= sum(logits[j] - log_z for j in positives) / len(positives)
        return total / n

    return 0.5 * (direction(za, zb) + direction(zb, za))


def _brute_siglip(za: torch.Tensor, zb: torch.Tensor, groups: list[int], t: float, b: float) -> float:
    """−(1/N) Σ_i Σ_j log σ(y_ij (t⟨za_i, zb_j⟩ + b)), y_ij = +1 when i and j share a group, else −1."""
    n = len(za)
    total = 0.0
    for i in range(n):
        for j in range(n):
            y = 1.0 if groups[i] == groups[j] else -1.0
            x = y * (t * float(za[i].double() @ zb[j].double()) + b)
            total -= -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))
    return total / n


def test_infonce_equals_a_brute_force_of_its_formula_with_multi_positive_groups() -> None:
    from modalign.align.losses.infonce import InfoNCELoss

    gen = torch.Generator().manual_seed(1)
    n = 8
    za = torch.nn.functional.normalize(torch.randn(n, 5, generator=gen), dim=1)
    zb = torch.nn.functional.normalize(torch.randn(n, 5, generator=gen), dim=1)
    groups = [0, 1, 1, 2, 3, 3, 3, 4]  # groups of one, two and three rows
    loss = InfoNCELoss(temperature=0.07, learn_temperature=False)
    got = float(loss(za, zb, PairBatch(groups=torch.tensor(groups))))
    assert abs(got - _brute_infonce(za, zb, groups, tau=0.07)) < 1e-5
    singles = list(range(n))  # every row its own group: plain CLIP
    got = float(loss(za, zb, PairBatch(groups=torch.tensor(singles))))
    assert abs(got - _brute_infonce(za, zb, singles, tau=0.07)) < 1e-5


def test_siglip_equals_a_brute_force_of_its_formula_with_multi_positive_groups() -> None:
    from modalign.align.losses.siglip import SigLIPLoss

    gen = torch.Generator().manual_seed(2)
    n = 8
    za = torch.nn.functional.normalize(torch.randn(n, 5, generator=gen), dim=1)
    zb = torch.nn.functional.normalize(torch.randn(n, 5, generator=gen), dim=1)
    groups = [0, 0, 1, 2, 2, 2, 3, 4]
    loss = SigLIPLoss(scale=10.0, bias=-10.0)
    got = float(loss(za, zb, PairBatch(groups=torch.tensor(groups))))
    assert abs(got - _brute_siglip(za, zb, groups, t=10.0, b=-10.0)) < 1e-4
    with torch.no_grad():  # a learnt scale past max_scale is clamped to it
        loss.log_t.fill_(math.log(500.0))
        loss.bias.fill_(-3.0)
    got = float(loss(za, zb, PairBatch(groups=torch.tensor(groups))))
    assert abs(got - _brute_siglip(za, zb, groups, t=100.0, b=-3.0)) < 1e-4
