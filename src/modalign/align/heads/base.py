"""Head contract: a small torch module from one encoder's features into the shared space.

Hyper-parameters live only in ``__init__`` (scikit-learn style) and ``config()`` returns them, so
``HEADS.create(**config)`` + ``load_state_dict`` rebuilds a fitted head from JSON + safetensors.
Every head conditions its input with fitted statistics kept as buffers: ``input_norm="center"``
subtracts the training mean and divides by one global scale (the mean norm of centred rows);
``"l2"`` first scales every row to unit length, so that one encoder's large common direction and its
norm spread (e.g. CNN pooling) stop dominating, then centres and scales the same way.
``"whiten:S"`` (S = shrinkage in (0, 1], ``"whiten"`` = 0.5) goes one step further: after ``l2`` and
centring it multiplies by ``C_S^{-1/2}``, the inverse square root of the training covariance shrunk
towards a multiple of the identity, ``(1 − S)·C + S·(tr C / D)·I`` (ZCA form, the matrix is kept as a
buffer), so no few directions dominate any more; with few rows S keeps the small eigenvalues from
blowing up noise. Everything is fitted on the training rows only (``fit_input_stats``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from modalign._registry import Registry

#: rows of input features read at once when fitting the input statistics
STATS_CHUNK = 16_384
#: input conditioning before a head's own layers (see the module docstring); "whiten:S" too
INPUT_NORMS = ("center", "l2", "whiten")
DEFAULT_SHRINKAGE = 0.5


def parse_input_norm(value: str) -> tuple[str, float]:
    """``"center"`` / ``"l2"`` / ``"whiten"`` / ``"whiten:S"`` → (kind, shrinkage; 0 unless whiten)."""
    kind, _, rest = str(value).partition(":")
    if kind not in INPUT_NORMS or (rest and kind != "whiten"):
        raise ValueError(f"input_norm must be center, l2, whiten or whiten:S (0 < S <= 1), got {value!r}")
    if kind != "whiten":
        return kind, 0.0
    try:
        shrink = float(rest) if rest else DEFAULT_SHRINKAGE
    except ValueError:
        shrink = float("nan")
    if not 0 < shrink <= 1:
        raise ValueError(f"input_norm {value!r}: the whitening shrinkage must be in (0, 1]")
    return kind, shrink


def _rows(features: Any, start: int, stop: int) -> torch.Tensor:
    if isinstance(features, torch.Tensor):
        return features[start:stop].float()
    return torch.as_tensor(np.asarray(features[start:stop]), dtype=torch.float32)


def _centred_gram(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    xc = (x - mean).double()
    return xc.T @ xc


# hand-kept LRU keyed by a digest of the rows (tensors are not hashable): auto's CV fits every candidate of
# one fold on the same rows, and one eigendecomposition serves each of them and every shrinkage
_EIGH: OrderedDict[bytes, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()


def _eigh_of_covariance(x: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    key = hashlib.blake2b(np.ascontiguousarray(x.numpy()).tobytes(), digest_size=16).digest() + \
        repr(tuple(x.shape)).encode()
    hit = _EIGH.get(key)
    if hit is None:
        hit = torch.linalg.eigh(_centred_gram(x, mean) / max(len(x), 1))
        _EIGH[key] = hit
        while len(_EIGH) > 8:
            _EIGH.popitem(last=False)
    _EIGH.move_to_end(key)
    return hit


class Head(nn.Module):
    name: ClassVar[str]
    #: False for heads with nothing to learn (a locked modality)
    trainable: ClassVar[bool] = True
    #: True for heads assembled from fitted heads (an ensemble): ``fit`` cannot train one directly
    assembled: ClassVar[bool] = False

    def __init__(self, in_dim: int, out_dim: int, input_norm: str = "center") -> None:
        super().__init__()
        self._norm_kind, self._shrinkage = parse_input_norm(input_norm)
        self.in_dim = int(in_dim)
        self.out_dim = int(out_dim)
        self.input_norm = input_norm
        self.register_buffer("input_mean", torch.zeros(self.in_dim))
        self.register_buffer("input_scale", torch.ones(()))
        if self._norm_kind == "whiten":
            self.register_buffer("input_whiten", torch.eye(self.in_dim))

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
        return torch.nn.functional.normalize(x, dim=-1) if self._norm_kind != "center" else x

    def copy_input_stats(self, other: Head) -> None:
        """Take ``other``'s fitted conditioning (same ``input_norm`` and width)."""
        if other.input_norm != self.input_norm or other.in_dim != self.in_dim:
            raise ValueError("copy_input_stats needs heads of the same input_norm and width")
        with torch.no_grad():
            for name in ("input_mean", "input_scale", "input_whiten"):
                if hasattr(self, name):
                    getattr(self, name).copy_(getattr(other, name))

    @torch.no_grad()
    def fit_input_stats(self, features: Any, chunk: int | None = None) -> None:
        """Center on the training mean and divide by the mean norm of centered rows.

        ``features``: an array, a tensor, a memory map or a streamed ``CachedMatrix``. Up to ``chunk``
        rows (default ``STATS_CHUNK``) are read at once: a larger matrix takes two passes (float64 sums),
        so memory stays bounded.
        """
        chunk = chunk or STATS_CHUNK
        n = len(features)
        whiten = self._norm_kind == "whiten"
        if n <= chunk:  # one pass, in float32 as always (keeps earlier fits bit-identical)
            x = self.condition(torch.as_tensor(np.asarray(features), dtype=torch.float32))
            mean = x.mean(0)
            centred = x - mean
            if whiten:
                self.input_whiten.copy_(self._whitener(_eigh_of_covariance(x, mean)))
                centred = centred @ self.input_whiten
            scale = centred.norm(dim=1).mean().clamp(min=1e-6)
        else:
            total = torch.zeros(self.in_dim, dtype=torch.float64)
            for start in range(0, n, chunk):
                total += self.condition(_rows(features, start, start + chunk)).sum(0, dtype=torch.float64)
            mean = (total / n).float()
            if whiten:
                gram = torch.zeros(self.in_dim, self.in_dim, dtype=torch.float64)
                for start in range(0, n, chunk):
                    gram += _centred_gram(self.condition(_rows(features, start, start + chunk)), mean)
                self.input_whiten.copy_(self._whitener(torch.linalg.eigh(gram / n)))
            norms = 0.0
            for start in range(0, n, chunk):
                rows = self.condition(_rows(features, start, start + chunk)) - mean
                if whiten:
                    rows = rows @ self.input_whiten
                norms += float(rows.norm(dim=1).sum(dtype=torch.float64))
            scale = torch.tensor(max(norms / n, 1e-6), dtype=torch.float32)
        self.input_mean.copy_(mean)
        self.input_scale.copy_(scale)

    def _whitener(self, eig: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """C_S^{-1/2} from the eigendecomposition (w, v) of the training covariance C (float64)."""
        w, v = eig
        w = w.clamp(min=0)
        w = (1 - self._shrinkage) * w + self._shrinkage * w.mean()
        w = w.clamp(min=1e-12 * max(float(w.max()), 1e-30))
        return ((v / w.sqrt()) @ v.T).float()

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        z = self.condition(x) - self.input_mean
        if self._norm_kind == "whiten":
            z = z @ self.input_whiten
        return z / self.input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.standardize(x))

    def project(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def auxiliary_loss(self) -> torch.Tensor | None:
        """Extra training loss from the last forward (e.g. MoE load balancing); None if none."""
        return None


HEADS: Registry[Head] = Registry("head")


def check_trainable_head(name: str) -> None:
    """A head ``fit`` can train: registered, and not one assembled from trained heads (an ensemble)."""
    if HEADS.get(name).assembled:
        raise ValueError(f"head {name!r} is assembled from trained heads (--seeds N --ensemble), not trained "
                         f"itself; choose one of {[n for n in HEADS.names() if not HEADS.get(n).assembled]}")
