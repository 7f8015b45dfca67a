"""Mixture-of-experts head (Alt-MoE style): E MLP experts, a top-k softmax router, load balancing."""

from __future__ import annotations

import torch
from torch import nn

from modalign.align.heads.base import HEADS, Head


@HEADS.register("moe")
class MoEHead(Head):
    """z = W x + Σ_{e ∈ topk(x)} g_e(x) · expert_e(x), g = softmax of the router's top-k logits.

    The shared linear path W keeps a well-posed map when few pairs reach each expert. The
    auxiliary loss is Switch-Transformer load balancing, ``aux_weight`` · E · Σ_e f_e · p_e (f_e the
    share of routing slots taken by expert e, p_e its mean router probability): 1·aux_weight when
    balanced, larger when a few experts take every row. Experts are evaluated densely (E is small
    and dense matmuls beat gather/scatter on CPU); only the gates are sparse.
    """

    name = "moe"

    def __init__(self, in_dim: int, out_dim: int, experts: int = 4, top_k: int = 2, hidden: int = 512,
                 dropout: float = 0.1, aux_weight: float = 0.01, input_norm: str = "center") -> None:
        super().__init__(in_dim, out_dim, input_norm)
        if not 1 <= top_k <= experts:
            raise ValueError(f"moe head: need 1 ≤ top_k ≤ experts, got top_k={top_k}, experts={experts}")
        self.experts = int(experts)
        self.top_k = int(top_k)
        self.hidden = int(hidden)
        self.dropout = float(dropout)
        self.aux_weight = float(aux_weight)
        self.shared = nn.Linear(in_dim, out_dim)
        self.router = nn.Linear(in_dim, experts)
        self.w1 = nn.Parameter(torch.randn(experts, in_dim, hidden) / in_dim**0.5)
        self.b1 = nn.Parameter(torch.zeros(experts, hidden))
        self.w2 = nn.Parameter(torch.randn(experts, hidden, out_dim) / hidden**0.5 * 0.1)
        self.b2 = nn.Parameter(torch.zeros(experts, out_dim))
        self.drop = nn.Dropout(dropout)
        self._aux: torch.Tensor | None = None

    def hyperparameters(self) -> dict[str, object]:
        return {"experts": self.experts, "top_k": self.top_k, "hidden": self.hidden, "dropout": self.dropout,
                "aux_weight": self.aux_weight}

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, E) sparse gates (top-k renormalised) and the dense router probabilities."""
        logits = self.router(x)
        probs = torch.softmax(logits, dim=1)
        top_val, top_idx = logits.topk(self.top_k, dim=1)
        gates = torch.zeros_like(logits).scatter(1, top_idx, torch.softmax(top_val, dim=1))
        return gates, probs

    def project(self, x: torch.Tensor) -> torch.Tensor:
        gates, probs = self.gates(x)
        h = nn.functional.gelu(torch.einsum("nd,edh->neh", x, self.w1) + self.b1)
        out = torch.einsum("neh,eho->neo", self.drop(h), self.w2) + self.b2  # (N, E, out)
        if self.training:
            routed = (gates > 0).to(x.dtype).mean(0) / self.top_k  # f_e, sums to 1
            self._aux = self.aux_weight * self.experts * (routed * probs.mean(0)).sum()
        else:
            self._aux = None
        return self.shared(x) + (gates.unsqueeze(-1) * out).sum(1)

    def auxiliary_loss(self) -> torch.Tensor | None:
        return self._aux
