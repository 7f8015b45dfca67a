"""Identity head: a *locked* modality (LiT) whose standardised features are the shared space."""

from __future__ import annotations

import torch

from modalign.align.heads.base import HEADS, Head


@HEADS.register("identity")
class IdentityHead(Head):
    name = "identity"
    trainable = False

    def __init__(self, in_dim: int, out_dim: int | None = None, input_norm: str = "center") -> None:
        if out_dim is not None and out_dim != in_dim:
            raise ValueError(f"identity head needs out_dim == in_dim ({in_dim}), got {out_dim}")
        super().__init__(in_dim, in_dim, input_norm)

    def config(self) -> dict[str, object]:
        return {"name": self.name, "in_dim": self.in_dim, **self._norm_config()}

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return x
