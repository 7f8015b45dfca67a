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
