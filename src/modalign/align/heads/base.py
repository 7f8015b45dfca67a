"""Head contract: a small torch module from one encoder's features into the shared space.

Hyper-parameters live only in ``__init__`` (scikit-learn style) and ``config()`` returns them, so
``HEADS.create(**config)`` + ``load_state_dict`` rebuilds a fitted head from JSON + safetensors.
Every head conditions its input with fitted statistics kept as buffers: ``input_norm="center"``
subtracts the training mean and divides by one global scale (the mean norm of centred rows);
``"l2"`` first scales every row to unit length, so that one encoder's large common direction and its
norm spread (e.g. CNN pooling) stop dominating, then centres and scales the same way.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from modalign._registry import Registry

#: rows of input features read at once when fitting the input statistics
STATS_CHUNK = 16_384
#: input conditioning before a head's own layers (see the module docstring)
INPUT_NORMS = ("center", "l2")


def _rows(features: Any, start: int, stop: int) -> torch.Tensor:
    if isinstance(features, torch.Tensor):
        return features[start:stop].float()
    return torch.as_tensor(np.asarray(features[start:stop]), dtype=torch.float32)


class Head(nn.Module):
    name: ClassVar[str]
    #: False for heads with nothing to learn (a locked modality)
    trainable: ClassVar[bool] = True

    def __init__(self, in_dim: int, out_dim: int, input_norm: str = "center") -> None:
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        self.in_dim = int(in_dim)
        self.out_dim = int(out_dim)
        self.input_norm = input_norm
        self.register_buffer("input_mean", torch.zeros(self.in_dim))
        self.register_buffer("input_scale", torch.ones(()))

    def hyperparameters(self) -> dict[str, Any]:
        """Extra ``__init__`` arguments beyond in/out dims (override in subclasses)."""
        return {}

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "in_dim": self.in_dim, "out_dim": self.out_dim, **self.hyperparameters(),
                **self._norm_config()}

    def _norm_config(self) -> dict[str, Any]:
        # written only when not the default, so configs of models saved before it existed stay unchanged
        return {} if self.input_norm == "center" else {"input_norm": self.input_norm}

    def condition(self, x: torch.Tensor) -> torch.Tensor:
        """The row-wise part of the conditioning (before centring)."""
        return torch.nn.functional.normalize(x, dim=-1) if self.input_norm == "l2" else x

    @torch.no_grad()
    def fit_input_stats(self, features: Any, chunk: int | None = None) -> None:
        """Center on the training mean and divide by the mean norm of centered rows.

        ``features``: an array, a tensor, a memory map or a streamed ``CachedMatrix``. Up to ``chunk``
        rows (default ``STATS_CHUNK``) are read at once: a larger matrix takes two passes (float64 sums),
        so memory stays bounded.
        """
        chunk = chunk or STATS_CHUNK
        n = len(features)
        if n <= chunk:  # one pass, in float32 as always (keeps earlier fits bit-identical)
            x = self.condition(torch.as_tensor(np.asarray(features), dtype=torch.float32))
            mean = x.mean(0)
            scale = (x - mean).norm(dim=1).mean().clamp(min=1e-6)
        else:
            total = torch.zeros(self.in_dim, dtype=torch.float64)
            for start in range(0, n, chunk):
                total += self.condition(_rows(features, start, start + chunk)).sum(0, dtype=torch.float64)
            mean = (total / n).float()
            norms = 0.0
            for start in range(0, n, chunk):
                rows = self.condition(_rows(features, start, start + chunk))
                norms += float((rows - mean).norm(dim=1).sum(dtype=torch.float64))
            scale = torch.tensor(max(norms / n, 1e-6), dtype=torch.float32)
        self.input_mean.copy_(mean)
        self.input_scale.copy_(scale)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (self.condition(x) - self.input_mean) / self.input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.standardize(x))

    def project(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def auxiliary_loss(self) -> torch.Tensor | None:
        """Extra training loss from the last forward (e.g. MoE load balancing); None if none."""
        return None


HEADS: Registry[Head] = Registry("head")
