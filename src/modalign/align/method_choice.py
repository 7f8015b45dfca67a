"""Which method a fit uses when none is named: one rule for ``modalign fit`` and ``modalign.fit``.

``auto`` is the default, but a caller who sets an option that only a trained method reads (a step or
epoch budget, a batch size, a non-linear head, a regulariser, DDP workers, GradCache chunks, growing a
base model, several seeds) has asked for training: they get ``infonce``, not a closed form that would
silently ignore what they set. Naming candidates (``auto``'s own option) keeps ``auto``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modalign.align.train_data import TrainerSettings

#: the method used when nothing says otherwise, and the one training-only options imply
DEFAULT = "auto"
TRAINED_DEFAULT = "infonce"


def training_arguments(*, epochs: int | None = None, steps: int | str | None = None, batch_size: int | None = None,
                       head: str = "linear", structure: float = 0.0, intra: float = 0.0, workers: int = 1,
                       grad_chunks: int = 1, base: Any = None, seeds: int = 1) -> list[str]:
    """The names of the training-only arguments that were given (empty: none)."""
    given = {"epochs": epochs is not None, "steps": steps is not None and steps != "auto",
             "batch_size": batch_size is not None, "head": head != "linear", "structure": bool(structure),
             "intra": bool(intra), "workers": workers > 1, "grad_chunks": grad_chunks > 1, "base": base is not None,
             "seeds": seeds > 1}
    return [name for name, yes in given.items() if yes]


def settings_arguments(settings: TrainerSettings | None, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Python API's ``settings`` / ``options`` read as the CLI's arguments: fields left at their
    defaults count as not given (a ``TrainerSettings()`` asks for nothing)."""
    default = TrainerSettings()
    opts = dict(options or {})
    out: dict[str, Any] = {"structure": opts.get("structure", 0.0), "intra": opts.get("intra", 0.0)}
    if settings is None:
        return out
    if settings.epochs != default.epochs:
        out["epochs"] = settings.epochs
    if settings.batch_size != default.batch_size:
        out["batch_size"] = settings.batch_size
    return {**out, "steps": settings.steps, "workers": settings.workers, "grad_chunks": settings.grad_chunks}


def default_method(given: list[str], candidates: Any = None) -> str:
    """``infonce`` when training-only arguments were ``given`` (and no auto candidates named), else ``auto``."""
    return TRAINED_DEFAULT if given and not candidates else DEFAULT


def resolve_method(method: str | None, given: list[str], candidates: Any = None) -> str:
    """``method`` when named, else the default rule above."""
    return method if method is not None else default_method(given, candidates)
