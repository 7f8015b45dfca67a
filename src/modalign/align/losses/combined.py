"""A contrastive loss plus weighted regularizers: ``--method infonce --structure 10``."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from modalign.align.losses.base import Batch, Loss


class CombinedLoss(Loss):
    """total = main + Σ_r λ_r · r (each regularizer ramps itself in over its warm-up steps).

    Not registered: it is built from registered parts (``build_loss``); its config lists them.
    """

    name = "combined"

    def __init__(self, main: Loss, regularizers: Sequence[tuple[float, Loss]] = ()) -> None:
        super().__init__()
        self.main = main
        self.weights = [float(w) for w, _ in regularizers]
        self.regularizers = torch.nn.ModuleList([r for _, r in regularizers])

    def config(self) -> dict[str, object]:
        return {"name": self.name, "main": self.main.config(),
                "regularizers": [{"weight": w, **r.config()} for w, r in zip(self.weights, self.regularizers,
                                                                               strict=True)]}

    def summary(self) -> dict[str, float]:
        return self.main.summary()

    def parts(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Each term (already weighted) of one batch; regularizers with nothing to score are left out."""
        out: dict[str, torch.Tensor] = {}
        main = self.main.batch_loss(batch)
        if main is not None:
            out[self.main.name] = main
        for w, reg in zip(self.weights, self.regularizers, strict=True):
            term = reg.batch_loss(batch)  # type: ignore[operator]
            if term is not None and w != 0:
                out[reg.name] = w * term
        return out

    def batch_loss(self, batch: Batch) -> torch.Tensor | None:
        parts = self.parts(batch)
        if self.main.name not in parts:
            return None
        return torch.stack(list(parts.values())).sum()


def _kwargs_for(name: str, factory: object, options: dict[str, object], shared: Sequence[str] = ()) -> dict:
    """Options ``<name>_<arg>`` (and the ``shared`` bare names) that ``factory.__init__`` accepts."""
    params = inspect.signature(factory).parameters  # type: ignore[arg-type]
    kwargs = {key: options[key] for key in shared if key in options and key in params}
    prefix = f"{name}_"
    for key, value in options.items():
        if key.startswith(prefix):
            arg = key[len(prefix):]
            if arg not in params:
                raise ValueError(f"option {key!r}: loss {name!r} has no parameter {arg!r}; it takes "
                                 f"{', '.join(params) or 'none'}")
            kwargs[arg] = value
    return kwargs


def _check_known(main: str, options: dict[str, object]) -> None:
    """Every option must reach a loss: a misspelt ``temprature`` would otherwise train at the default."""
    from modalign.align.losses.base import LOSSES

    main_params = inspect.signature(LOSSES.get(main)).parameters
    names = LOSSES.names()
    for key in options:
        if key in ("temperature", "learn_temperature"):
            if key not in main_params:
                raise ValueError(f"option {key!r}: loss {main!r} has no {key}; it takes {', '.join(main_params)}")
        elif key not in names and not any(key.startswith(f"{n}_") for n in names):
            raise ValueError(f"unknown loss option {key!r}: give temperature, a regularizer weight "
                             f"({', '.join(n for n in names if n != main)}) or <loss>_<argument> "
                             f"(e.g. {main}_{next(iter(main_params), 'x')})")


def build_loss(main: str, options: dict[str, object] | None = None) -> Loss:
    """The training loss of ``main`` + every regularizer given a weight in ``options``.

    ``options``: ``temperature`` (main loss), ``<loss>_<arg>`` for any loss argument
    (``cwcl_power``, ``structure_levels``, ``structure_warmup`` ...), and ``<regularizer>: λ``
    (``structure: 10``, ``intra: 1``) to add a regularizer with weight λ.
    """
    from modalign.align.losses.base import LOSSES

    options = dict(options or {})
    _check_known(main, options)
    factory = LOSSES.get(main)
    loss = LOSSES.create(main, **_kwargs_for(main, factory, options, shared=("temperature", "learn_temperature")))
    if loss.is_regularizer:
        raise ValueError(f"{main!r} is a regularizer: add it to a contrastive loss (e.g. --{main} 10)")
    regs: list[tuple[float, Loss]] = []
    for name in LOSSES.names():
        weight = options.get(name)
        if name == main or not weight:
            continue
        reg_factory = LOSSES.get(name)
        reg = LOSSES.create(name, **_kwargs_for(name, reg_factory, options))
        if not reg.is_regularizer:
            raise ValueError(f"option {name!r}: {name} is a contrastive loss, not a regularizer")
        regs.append((float(weight), reg))  # type: ignore[arg-type]
    return CombinedLoss(loss, regs) if regs else loss
