"""Loss contract: modules scoring a batch of aligned embeddings.

Every registered loss implements ``batch_loss(Batch)``: the batch holds, for every modality, the
L2-normalised embeddings ``z[m]`` (N, d), the frozen features ``x[m]`` (CWCL, STRUCTURE), the mask of
rows that have the modality and the rows' group ids (rows of one group are positives of each other,
e.g. four images of one concept). Three families share it:

- ``PairLoss``: a two-modality loss ``forward(za, zb, PairBatch)``; over a batch it is averaged over
  every modality pair with ≥ 2 rows holding both (rows missing one modality still train the others);
- ``ModalityRegularizer``: a per-modality term ``regularize(x, z)`` (STRUCTURE, intra-modal), averaged
  over the modalities of the batch;
- tuple losses (GRAM, Symile) override ``batch_loss`` and look at several modalities of a row at once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from modalign._registry import Registry


@dataclass
class PairBatch:
    groups: torch.Tensor  # (N,) int64 group index of each row
    xa: torch.Tensor | None = None  # frozen features of modality a (N, Da)
    xb: torch.Tensor | None = None
    step: int = 0

    def positives(self) -> torch.Tensor:
        """(N, N) bool: rows i and j show the same concept."""
        return self.groups[:, None] == self.groups[None, :]


@dataclass
class Batch:
    """One mini-batch over all modalities (rows without a modality hold anything there)."""

    z: dict[str, torch.Tensor]  # m -> (N, d) unit-norm embeddings
    x: dict[str, torch.Tensor]  # m -> (N, D_m) frozen features
    present: dict[str, torch.Tensor]  # m -> (N,) bool
    groups: torch.Tensor  # (N,) int64
    step: int = 0
    frozen: frozenset[str] = frozenset()  # modalities whose head is not trained (locked, an existing space)

    @property
    def modalities(self) -> list[str]:
        return list(self.z)

    def pair(self, a: str, b: str) -> tuple[torch.Tensor, torch.Tensor, PairBatch] | None:
        """Rows holding both ``a`` and ``b`` (None when fewer than 2)."""
        idx = torch.nonzero(self.present[a] & self.present[b]).flatten()
        if len(idx) < 2:
            return None
        return self.z[a][idx], self.z[b][idx], PairBatch(self.groups[idx], self.x[a][idx], self.x[b][idx], self.step)


class Loss(nn.Module):
    name: ClassVar[str]
    #: regularizers are added to a contrastive loss, never used alone
    is_regularizer: ClassVar[bool] = False

    def hyperparameters(self) -> dict[str, Any]:
        return {}

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self.hyperparameters()}

    def batch_loss(self, batch: Batch) -> torch.Tensor | None:  # pragma: no cover - abstract
        """The loss of one batch, or None when the batch holds nothing this loss can score."""
        raise NotImplementedError

    def summary(self) -> dict[str, float]:
        """Learnt scalars worth reporting in metrics.json (temperature, bias ...)."""
        return {}


class PairLoss(Loss):
    def forward(self, za: torch.Tensor, zb: torch.Tensor, batch: PairBatch) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def batch_loss(self, batch: Batch) -> torch.Tensor | None:
        terms = []
        for a, b in itertools.combinations(batch.modalities, 2):
            pair = batch.pair(a, b)
            if pair is not None:
                terms.append(self(*pair))
        return torch.stack(terms).mean() if terms else None


class ModalityRegularizer(PairLoss):
    """A term on each modality alone, comparing its aligned embeddings with its own frozen features.

    ``warmup`` steps ramp the term in linearly (min(1, step/warmup)): early on the heads are random and
    keeping their neighbourhoods would only slow the contrastive loss down.
    """

    is_regularizer = True
    warmup: int = 0

    def ramp(self, step: int) -> float:
        return min(1.0, step / self.warmup) if self.warmup > 0 else 1.0

    def regularize(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, za: torch.Tensor, zb: torch.Tensor, batch: PairBatch) -> torch.Tensor:
        if batch.xa is None or batch.xb is None:
            raise ValueError(f"{self.name} needs the frozen features of both modalities")
        return 0.5 * self.ramp(batch.step) * (self.regularize(batch.xa, za) + self.regularize(batch.xb, zb))

    def batch_loss(self, batch: Batch) -> torch.Tensor | None:
        terms = []
        for m in batch.modalities:
            idx = torch.nonzero(batch.present[m]).flatten()
            if len(idx) >= 2 and m not in batch.frozen:  # a locked/frozen modality has nothing to keep
                terms.append(self.regularize(batch.x[m][idx], batch.z[m][idx]))
        return self.ramp(batch.step) * torch.stack(terms).mean() if terms else None


LOSSES: Registry[Loss] = Registry("loss")


def soft_targets(positives: torch.Tensor) -> torch.Tensor:
    """Row-normalised positive mask: every positive of a row shares its probability mass."""
    pos = positives.to(torch.float32)
    return pos / pos.sum(1, keepdim=True)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of −Σ_j t_ij log softmax_j(logits_i)."""
    return -(targets * torch.log_softmax(logits, dim=1)).sum(1).mean()


def centered_unit(x: torch.Tensor) -> torch.Tensor:
    """Row-normalise then mean-centre over the batch (how STRUCTURE and CWCL read frozen features)."""
    x = nn.functional.normalize(x.to(torch.float32), dim=1)
    return x - x.mean(0, keepdim=True)
