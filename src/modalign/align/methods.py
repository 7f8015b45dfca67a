"""Alignment methods: a name → a function turning cached features into fitted heads.

A method gets a ``FitContext`` (train/validation features of every modality, the shared dim,
hyper-parameters) and returns one fitted head per modality plus facts for metrics.json.
Adding a method = one function + one ``METHODS.register`` line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modalign._registry import Registry
from modalign.align.heads.base import HEADS, Head
from modalign.align.trainer import Progress, TrainData, TrainerSettings

MethodResult = tuple[dict[str, Head], dict[str, Any]]


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
    locked: tuple[str, ...] = ()  # modalities whose head is the identity (LiT)
    progress: Progress | None = None

    def new_heads(self) -> dict[str, Head]:
        """One head per modality, input statistics fitted on the rows that have it."""
        heads: dict[str, Head] = {}
        for m in self.modalities:
            x = self.train.features[m][self.train.present[m]]
            if m in self.locked:
                head = HEADS.create("identity", in_dim=x.shape[1])
            else:
                out_dim = self._locked_dim() or self.dim
                head = HEADS.create(self.head, in_dim=x.shape[1], out_dim=out_dim, **self.head_options)
            head.fit_input_stats(x)
            heads[m] = head
        return heads

    def _locked_dim(self) -> int | None:
        if not self.locked:
            return None
        return int(self.train.features[self.locked[0]].shape[1])


METHODS: Registry[Callable[[FitContext], MethodResult]] = Registry("method")


@METHODS.register("infonce")
def fit_infonce(ctx: FitContext) -> MethodResult:
    from modalign.align.losses import LOSSES
    from modalign.align.trainer import train_pairwise

    heads = ctx.new_heads()
    loss = LOSSES.create("infonce", temperature=float(ctx.options.get("temperature", 0.07)))
    result = train_pairwise(heads, loss, ctx.train, ctx.val, ctx.settings, ctx.progress)
    return heads, {"best_epoch": result.best_epoch, "val_R@1": result.best_val,
                   "temperature_final": float(1.0 / loss.scale().detach()), "history": result.history}


@METHODS.register("procrustes")
def fit_procrustes_method(ctx: FitContext) -> MethodResult:
    from modalign.align.closed_form import fit_procrustes
    from modalign.align.trainer import validation_score

    if len(ctx.modalities) != 2:
        raise ValueError("procrustes aligns exactly two modalities; use a trained method for more")
    a, b = ctx.modalities
    rows = ctx.train.present[a] & ctx.train.present[b]
    head_a, head_b = fit_procrustes(ctx.train.features[a][rows], ctx.train.features[b][rows], dim=ctx.dim,
                                    whiten=bool(ctx.options.get("whiten", True)))
    heads: dict[str, Head] = {a: head_a, b: head_b}
    val = validation_score(heads, ctx.val, ctx.val.pairs()) if ctx.val is not None and len(ctx.val) else None
    return heads, {"val_R@1": val}
