"""Alignment methods: a name → a function turning cached features into fitted heads.

A method gets a ``FitContext`` (train/validation features of every modality, the shared dim,
hyper-parameters) and returns one fitted head per modality plus facts for metrics.json.
Adding a method = one function + one ``METHODS.register`` line. Trained methods (every
contrastive loss in ``LOSSES``) share one function; closed-form ones tune their few knobs on the
validation split (never on held-out test data).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modalign._registry import Registry
from modalign.align.heads.base import HEADS, Head
from modalign.align.trainer import Progress, TrainData, TrainerSettings, resolved_for

log = logging.getLogger(__name__)

MethodResult = tuple[dict[str, Head], dict[str, Any]]
#: the methods solved in closed form (no training loop: the trainer's settings do not apply to them)
CLOSED_FORM_METHODS = ("procrustes", "cca", "ridge", "semi-cca")


@dataclass
class FitContext:
    modalities: list[str]
    train: TrainData
    val: TrainData | None
    dim: int = 256
    head: str = "linear"
    head_options: dict[str, Any] = field(default_factory=dict)
    settings: TrainerSettings = field(default_factory=TrainerSettings)
    options: dict[str, Any] = field(default_factory=dict)  # method-specific (temperature, structure, ...)
    input_norm: str = "center"  # every head's input conditioning (``Head``): "center" or "l2"
    locked: tuple[str, ...] = ()  # modalities whose head is the identity (LiT)
    progress: Progress | None = None

    def new_heads(self) -> dict[str, Head]:
        """One head per modality, input statistics fitted on the rows that have it."""
        self.check_locked()
        # seeded here, not only in the trainer: otherwise the initial weights depend on whatever drew
        # from torch's global generator earlier in the process (same seed, different results)
        import torch

        torch.manual_seed(self.settings.seed)
        heads: dict[str, Head] = {}
        for m in self.modalities:
            x = self.train.features[m][self.train.present[m]]
            if m in self.locked:
                head = HEADS.create("identity", in_dim=x.shape[1], input_norm=self.input_norm)
            else:
                out_dim = self._locked_dim() or self.dim
                head = HEADS.create(self.head, in_dim=x.shape[1], out_dim=out_dim,
                                    **{"input_norm": self.input_norm, **self.head_options})
            head.fit_input_stats(x)
            heads[m] = head
        return heads

    def check_locked(self) -> None:
        unknown = [m for m in self.locked if m not in self.modalities]
        if unknown:
            raise ValueError(f"locked modality {unknown} is not one of {self.modalities}")
        dims = {int(self.train.features[m].shape[1]) for m in self.locked}
        if len(dims) > 1:
            raise ValueError(f"locked modalities {list(self.locked)} have different widths {sorted(dims)}: "
                             "lock one, the others map into its space")
        if len(self.locked) == len(self.modalities):
            raise ValueError("every modality is locked: nothing to align")

    def _locked_dim(self) -> int | None:
        if not self.locked:
            return None
        return int(self.train.features[self.locked[0]].shape[1])

    def val_score(self, heads: dict[str, Head]) -> float | None:
        from modalign.align.trainer import validation_score

        if self.val is None or not len(self.val):
            return None
        return validation_score(heads, self.val, self.val.pairs())


METHODS: Registry[Callable[[FitContext], MethodResult]] = Registry("method")

#: options read by the methods themselves, not handed to the loss
METHOD_OPTIONS = {"anchor", "whiten", "reg", "power", "alpha"}


def _trained(loss_name: str) -> Callable[[FitContext], MethodResult]:
    def fit_trained(ctx: FitContext) -> MethodResult:
        from modalign.align.losses import build_loss
        from modalign.align.trainer import train_heads

        heads = ctx.new_heads()
        options = {k: v for k, v in ctx.options.items() if k not in METHOD_OPTIONS}
        anchor = ctx.options.get("anchor") or (ctx.locked[0] if ctx.locked else None)
        if loss_name == "gram" and anchor:
            options.setdefault("gram_anchor", anchor)
        if loss_name == "cwcl" and ctx.locked and len(ctx.modalities) == 2:
            # the frozen (locked) side's own similarities weight the targets, as in the paper
            options.setdefault("cwcl_weights_from", "a" if ctx.modalities[0] in ctx.locked else "b")
        loss = build_loss(loss_name, options)
        settings = resolved_for(ctx.settings, len(ctx.train))
        result = train_heads(heads, loss, ctx.train, ctx.val, settings, ctx.progress)
        info: dict[str, Any] = {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
                                "val_R@1": result.best_val if ctx.val is not None else None,
                                "loss": loss.config(), **loss.summary(), "history": result.history}
        if settings.steps is not None:  # the step schedule: best_epoch is the best evaluation's step
            info.update(schedule={"batch_size": settings.batch_size, "steps": settings.steps,
                                  "warmup": settings.warmup,
                                  "early_stop_signal": "val_MRR" if settings.restore_best else "none (final weights)"},
                        best_step=result.best_epoch)
        return heads, info

    fit_trained.__name__ = f"fit_{loss_name}"
    fit_trained.__doc__ = f"Train heads with the {loss_name!r} loss (+ regularizers from the options)."
    return fit_trained


for _name in ("infonce", "siglip", "cwcl", "gram", "symile"):
    METHODS.register(_name)(_trained(_name))

#: validation grids of the closed-form knobs ("auto"): they fit in a second, so tune them all
GRIDS: dict[str, dict[str, list[Any]]] = {
    "procrustes": {"whiten": [True, False]},
    "cca": {"reg": [0.03, 0.1, 0.3, 0.6], "power": [0.0, 1.0, 2.0, 4.0]},
    "ridge": {"alpha": [0.01, 0.1, 1.0], "whiten": [False, True]},
}
DEFAULTS: dict[str, dict[str, Any]] = {"procrustes": {"whiten": True}, "cca": {"reg": 0.1, "power": 1.0},
                                       "ridge": {"alpha": 0.1, "whiten": False}}


def _closed_form(kind: str) -> Callable[[FitContext], MethodResult]:
    def fit_closed(ctx: FitContext) -> MethodResult:
        from modalign.align.closed_form import ClosedFormSettings, fit_closed_form

        ctx.check_locked()
        unknown = set(ctx.options) - set(DEFAULTS[kind]) - {"anchor"}
        if unknown:
            raise ValueError(f"{kind}: unknown option(s) {sorted(unknown)}; it takes "
                             f"{sorted([*DEFAULTS[kind], 'anchor'])}")
        fixed = {k: v for k, v in ctx.options.items() if k in DEFAULTS[kind] and v != "auto"}
        # tune what the caller left open, on validation rows only; without them, take the defaults
        grid = {k: v for k, v in GRIDS[kind].items() if k not in fixed} if ctx.val is not None and len(ctx.val) \
            else {}
        anchor = ctx.options.get("anchor")
        train = ctx.train.in_memory()  # closed forms factor whole matrices: read streamed features once
        trials: list[dict[str, Any]] = []
        best: tuple[float, dict[str, Head] | None, dict[str, Any]] = (-1.0, None, {})
        for values in itertools.product(*grid.values()) if grid else [()]:
            params = {**DEFAULTS[kind], **fixed, **dict(zip(grid, values, strict=True))}
            heads = fit_closed_form(train.features, train.present, ctx.modalities,
                                    ClosedFormSettings(kind, dim=ctx.dim, input_norm=ctx.input_norm, **params),
                                    anchor=anchor,
                                    locked=ctx.locked)
            score = ctx.val_score(heads)
            trials.append({**params, "val_R@1": score})
            if best[1] is None or (score is not None and score > best[0]):
                best = (score if score is not None else -1.0, heads, params)
        heads, params = best[1], best[2]
        assert heads is not None
        info: dict[str, Any] = {"val_R@1": ctx.val_score(heads), "params": params,
                                "anchor": anchor or (ctx.locked[0] if ctx.locked else ctx.modalities[0])}
        if len(trials) > 1:
            info["tuning"] = trials
        return heads, info

    fit_closed.__name__ = f"fit_{kind}"
    fit_closed.__doc__ = f"Closed-form {kind} (knobs left at 'auto' are tuned on the validation split)."
    return fit_closed


for _name in ("procrustes", "cca", "ridge"):
    METHODS.register(_name)(_closed_form(_name))

