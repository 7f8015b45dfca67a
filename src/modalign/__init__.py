"""modalign: a shared embedding space from frozen unimodal encoders and a few thousand pairs.

Top-level names are imported lazily so that ``import modalign.features`` (or the CLI's
``--help``) does not pay for torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "AlignedModel": "modalign.align.model",
    "audit": "modalign.evaluation.audit",
    "fit": "modalign.align.fit",
    "load": "modalign.align.model",
    "PairedDataset": "modalign.data.dataset",
    "evaluate": "modalign.evaluation.evaluate",
    "Encoder": "modalign.encoders.base",
    "list_encoders": "modalign.encoders.catalog",
}

if TYPE_CHECKING:
    from modalign.align.fit import fit
    from modalign.align.model import AlignedModel, load
    from modalign.data.dataset import PairedDataset
    from modalign.encoders.base import Encoder
    from modalign.encoders.catalog import list_encoders
    from modalign.evaluation.audit import audit
    from modalign.evaluation.evaluate import evaluate


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'modalign' has no attribute {name!r}")


__all__ = ["AlignedModel", "Encoder", "PairedDataset", "audit", "evaluate", "fit", "list_encoders", "load"]


def __dir__() -> list[str]:
    """The public API first (tab completion shows ``fit``, ``load`` ... although they load lazily)."""
    return sorted({*__all__, "__version__"})
