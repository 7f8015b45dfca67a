"""Progressive addition (OneEncoder, ImageBind): grow an aligned space by one modality.

The existing space stays frozen — its heads, layers and encoders are copied unchanged — and only
the new modality's head is fitted, against whichever modalities of the space its rows hold. Those
rows may be entirely different from the ones the space was fitted on: speech↔text pairs are enough
to put speech next to images that never met a speech clip.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from modalign.align.fit import Progress, encode_column, resolve_encoder
from modalign.align.heads.base import HEADS, Head, check_trainable_head
from modalign.align.methods import DEFAULTS, GRIDS
from modalign.align.model import AlignedModel, Branch
from modalign.align.trainer import TrainData, TrainerSettings, train_heads, validation_score
from modalign.data.dataset import PairedDataset, RowError, split_indices
from modalign.encoders import EncoderChoice, get_encoder
from modalign.features import FeatureCache

log = logging.getLogger(__name__)

CLOSED_FORM = ("procrustes", "cca", "ridge")


def add_modality(
    base: AlignedModel,
    dataset: PairedDataset,
    modality: str,
    *,
    encoder: EncoderChoice | None = None,
    partners: Sequence[str] | None = None,
    method: str = "infonce",
    head: str = "linear",
    head_options: Mapping[str, Any] | None = None,
    layer: str = "last",
    cache: FeatureCache | None = None,
    val_fraction: float = 0.1,
    settings: TrainerSettings | None = None,
    options: Mapping[str, Any] | None = None,
    on_error: Literal["skip", "fail"] = "skip",
    progress: Progress | None = None,
) -> AlignedModel:
    """A new model = ``base`` + a head for ``modality`` fitted on ``dataset`` against the frozen space.

    ``partners``: modalities of the space to pair with (default: every one the data holds).
    ``method``: a contrastive loss (infonce, siglip, cwcl + regularizer options) or a closed form
    (procrustes, cca, ridge: a map of the new features onto the partners' fixed embeddings).
    ``layer``: "last", "auto" (mutual-kNN against the partners' layers) or a layer name.
    """
    from modalign.align.losses import LOSSES, build_loss

    settings = settings or TrainerSettings()
    if modality in base.modalities:
        raise ValueError(f"modality {modality!r} is already in the model ({base.modalities})")
    if modality not in dataset.columns:
        raise ValueError(f"modality {modality!r} is not in the data; it has {dataset.modalities}")
    partners = list(partners) if partners else [m for m in base.modalities if m in dataset.columns]
    missing = [m for m in partners if m not in base.modalities or m not in dataset.columns]
    if missing or not partners:
        raise ValueError(f"the new modality needs partner modalities in both the model ({base.modalities}) and "
                         f"the data ({dataset.modalities}); missing: {missing or 'all'}")
    trained = method in LOSSES and not LOSSES.get(method).is_regularizer and method not in ("gram", "symile")
    if not trained and method not in CLOSED_FORM:
        raise ValueError(f"progressive addition supports infonce, siglip, cwcl, {', '.join(CLOSED_FORM)}; "
                         f"got {method!r}")
    if trained:
        check_trainable_head(head)
    cache = cache if cache is not None else FeatureCache()

    # encode: partners with the space's own encoder + layer, the new modality with its encoder
    features: dict[str, dict[str, Any]] = {}  # streamed from the cache (CachedMatrix), see encode_column
    present: dict[str, np.ndarray] = {}
    errors: list[RowError] = list(dataset.errors)
    for m in partners:
        b = base.branch(m)
        if dataset.kind(m) != b.kind:
            raise ValueError(f"modality {m!r} is {dataset.kind(m)} in the data but {b.kind} in the model")
        features[m], present[m], errs = encode_column(dataset, m, base.encoder_for(m), cache, [b.layer],
                                                      progress, on_error, stream=True)
        errors.extend(errs)
    enc_name, enc_cfg = resolve_encoder(dataset, modality, encoder)
    enc = get_encoder(enc_name, **enc_cfg)
    if enc.kind != dataset.kind(modality):
        raise ValueError(f"encoder {enc.name!r} reads {enc.kind}, but modality {modality!r} is "
                         f"{dataset.kind(modality)}")
    if layer not in ("last", "auto") and layer not in enc.layers:
        raise ValueError(f"encoder {enc.name!r} has no layer {layer!r}; it has {list(enc.layers)}")
    wanted = None if layer == "auto" else [enc.default_layer if layer == "last" else layer]
    features[modality], present[modality], errs = encode_column(dataset, modality, enc, cache, wanted, progress,
                                                                on_error, stream=True)
    errors.extend(errs)

    layer_report: dict[str, Any] = {}
    if layer == "auto":
        from modalign.align.layer_selection import select_layers

        fixed = {m: base.branch(m).layer for m in partners}
        chosen, layer_report = select_layers(features, present, [*partners, modality], seed=settings.seed,
                                             fixed=fixed)
        new_layer = chosen[modality]
    else:
        new_layer = wanted[0]  # type: ignore[index]

    mods = [*partners, modality]
    group_ids = {g: i for i, g in enumerate(dict.fromkeys(dataset.groups))}
    groups = np.array([group_ids[g] for g in dataset.groups], dtype=np.int64)
    train_idx, val_idx = split_indices(dataset.groups, val_fraction, seed=settings.seed + 1) if val_fraction > 0 \
        else (list(range(len(dataset))), [])

    def part(idx: list[int]) -> TrainData:
        ix = np.asarray(idx, dtype=np.int64)
        feats = {m: features[m][base.branch(m).layer if m in partners else new_layer][ix] for m in mods}
        return TrainData(features=feats, present={m: present[m][ix] for m in mods}, groups=groups[ix])

    train, val = part(train_idx), (part(val_idx) if val_idx else None)
    if not np.any([train.present[m] & train.present[modality] for m in partners]):
        raise ValueError(f"no training row pairs {modality!r} with any of {partners}")
    heads: dict[str, Head] = {m: copy.deepcopy(base.branch(m).head).eval() for m in partners}
    val_pairs = [(m, modality) for m in partners]
    x_new = train.features[modality][train.present[modality]]
    opts = dict(options or {})
    if trained:
        new_head = HEADS.create(head, in_dim=x_new.shape[1], out_dim=base.dim, **dict(head_options or {}))
        new_head.fit_input_stats(x_new)
        heads[modality] = new_head
        loss = build_loss(method, opts)
        result = train_heads(heads, loss, train, val, settings, progress, frozen=partners, val_pairs=val_pairs)
        info: dict[str, Any] = {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
                                "val_R@1": result.best_val if val else None,
                                "loss": loss.config(), **loss.summary(), "history": result.history}
    else:
        heads[modality], info = _closed_form_head(method, heads, train, val, modality, partners, opts, val_pairs)

    branches = dict(base.branches)  # the space's own branches, untouched
    branches[modality] = Branch(modality, dataset.kind(modality), enc_name, enc_cfg, new_layer,
                                heads[modality].eval(), encoder_weights=enc.weights_sha256)
    stage = {"added": modality, "partners": partners, "method": method, "head": heads[modality].config()["name"],
             "head_options": dict(head_options or {}), "options": opts, "layer": new_layer,
             "layers": layer, "settings": vars(settings), "val_fraction": val_fraction,
             "n_rows": len(dataset), "n_train_rows": len(train_idx), "n_val_rows": len(val_idx),
             "n_skipped": len(errors)}
    training = copy.deepcopy(base.training)
    training.setdefault("progressive", []).append(stage)
    metrics = copy.deepcopy(base.metrics)
    metrics.setdefault("progressive", {})[modality] = {"fit": info, "layers": {"chosen": new_layer,
                                                                                **layer_report}}
    return AlignedModel(branches=branches, dim=base.dim, method=base.method, training=training, metrics=metrics,
                        fit_errors=errors)


def _closed_form_head(
    kind: str, heads: dict[str, Head], train: TrainData, val: TrainData | None, modality: str,
    partners: list[str], options: dict[str, Any], val_pairs: list[tuple[str, str]],
) -> tuple[Head, dict[str, Any]]:
    """Map the new features onto the partners' fixed (unit-norm) embeddings, over all their shared rows."""
    from modalign.align.closed_form import cca_to, procrustes_to, ridge_to
    from modalign.align.heads.linear import LinearHead

    unknown = set(options) - set(DEFAULTS[kind])
    if unknown:
        raise ValueError(f"{kind}: unknown option(s) {sorted(unknown)}; it takes {sorted(DEFAULTS[kind])}")
    train = train.in_memory()  # a closed form factors whole matrices
    head = LinearHead(train.features[modality].shape[1], next(iter(heads.values())).out_dim)
    head.fit_input_stats(train.features[modality][train.present[modality]])
    xs, targets = [], []
    with torch.no_grad():
        for m in partners:
            rows = train.present[m] & train.present[modality]
            if rows.sum() == 0:
                continue
            z = torch.nn.functional.normalize(heads[m](torch.as_tensor(train.features[m][rows])), dim=1)
            targets.append(z.numpy().astype(np.float64))
            xs.append(head.standardize(torch.as_tensor(train.features[modality][rows])).numpy().astype(np.float64))
    x, target = np.concatenate(xs), np.concatenate(targets)
    fixed = {k: v for k, v in options.items() if v != "auto"}
    relevant = {"procrustes": ("whiten",), "cca": ("reg", "power"), "ridge": ("alpha",)}[kind]
    grid = {k: GRIDS[kind][k] for k in relevant if k not in fixed} if val is not None else {}
    best: tuple[float, dict[str, Any] | None, np.ndarray | None] = (-1.0, None, None)
    trials = []
    for values in itertools.product(*grid.values()) if grid else [()]:
        params = {**DEFAULTS[kind], **fixed, **dict(zip(grid, values, strict=True))}
        if kind == "procrustes":
            mat = procrustes_to(target, x, bool(params["whiten"]))
        elif kind == "cca":
            mat = cca_to(target, x, float(params["reg"]), float(params["power"]))
        else:
            mat = ridge_to(target, x, float(params["alpha"]))
        with torch.no_grad():
            head.linear.weight.copy_(torch.as_tensor(mat.T, dtype=torch.float32))
            head.linear.bias.zero_()
        score = validation_score({**heads, modality: head}, val, val_pairs) if val is not None else -1.0
        trials.append({**params, "val_R@1": score})
        if best[1] is None or score > best[0]:
            best = (score, params, mat)
    with torch.no_grad():
        head.linear.weight.copy_(torch.as_tensor(best[2].T, dtype=torch.float32))  # type: ignore[union-attr]
        head.linear.bias.zero_()
    info: dict[str, Any] = {"val_R@1": best[0] if val is not None else None, "params": best[1]}
    if len(trials) > 1:
        info["tuning"] = trials
    return head, info
