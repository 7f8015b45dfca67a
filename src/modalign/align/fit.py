"""``fit``: manifest rows → cached frozen features → a method's heads → an AlignedModel."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from modalign.align.methods import METHODS, FitContext
from modalign.align.model import AlignedModel, Branch
from modalign.align.trainer import TrainData, TrainerSettings
from modalign.data.dataset import PairedDataset, RowError, split_indices
from modalign.encoders import DEFAULT_ENCODER_FOR_KIND, Encoder, get_encoder
from modalign.features import FeatureCache, extract

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
LayerChoice = Literal["last", "auto"] | Mapping[str, str]


def resolve_encoder(dataset: PairedDataset, modality: str, name: str | None = None) -> tuple[str, dict[str, Any]]:
    """Encoder name + config for a modality (default by kind; vector dim read from the data)."""
    kind = dataset.kind(modality)
    name = name or DEFAULT_ENCODER_FOR_KIND[kind]
    config: dict[str, Any] = {}
    if name == "vectors":
        first = next((v for v in dataset.columns[modality] if v is not None), None)
        if first is None:
            raise ValueError(f"modality {modality!r} has no values")
        from modalign.encoders.vectors import load_vector

        config["dim"] = int(load_vector(first).shape[0])
    return name, config


def encode_column(
    dataset: PairedDataset,
    modality: str,
    encoder: Encoder,
    cache: FeatureCache | None,
    layers: Sequence[str] | None,
    progress: Progress | None = None,
    on_error: Literal["skip", "fail"] = "skip",
) -> tuple[dict[str, np.ndarray], np.ndarray, list[RowError]]:
    """Features of every row (zeros where missing or failed) + the mask of rows that have them."""
    present = dataset.present(modality)
    rows = np.flatnonzero(present)
    total = len(rows)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(f"encode {modality}", min(done[0], total), total)

    res = extract(encoder, dataset.items(modality, rows), cache, layers=layers, progress=tick, on_error=on_error)
    wanted = list(res.features)
    feats = {layer: np.zeros((len(dataset), encoder.layer_dims[layer]), np.float32) for layer in wanted}
    ok_rows = rows[res.ok]
    for layer in wanted:
        feats[layer][ok_rows] = res.features[layer]
    mask = np.zeros(len(dataset), dtype=bool)
    mask[ok_rows] = True
    errors = [RowError(row="-", id=dataset.ids[rows[i]], field=modality, reason=reason) for i, reason in res.errors]
    return feats, mask, errors


def fit(
    dataset: PairedDataset,
    modalities: Sequence[str],
    *,
    encoders: Mapping[str, str] | None = None,
    method: str = "infonce",
    head: str = "linear",
    head_options: Mapping[str, Any] | None = None,
    dim: int = 256,
    layers: LayerChoice = "last",
    cache: FeatureCache | None = None,
    val_fraction: float = 0.1,
    settings: TrainerSettings | None = None,
    options: Mapping[str, Any] | None = None,
    locked: Sequence[str] = (),
    on_error: Literal["skip", "fail"] = "skip",
    progress: Progress | None = None,
) -> AlignedModel:
    """Fit heads aligning ``modalities`` of ``dataset`` (use ``dataset.split`` first to hold out a test set)."""
    modalities = list(modalities)
    if len(modalities) < 2:
        raise ValueError(f"need at least two modalities to align, got {modalities}")
    for m in modalities:
        if m not in dataset.columns:
            raise ValueError(f"modality {m!r} is not in the data; it has {dataset.modalities}")
    METHODS.get(method)  # unknown method: fail before any encoding
    settings = settings or TrainerSettings()
    encoders = dict(encoders or {})
    cache = cache if cache is not None else FeatureCache()

    specs = {m: resolve_encoder(dataset, m, encoders.get(m)) for m in modalities}
    encs = {m: get_encoder(name, **cfg) for m, (name, cfg) in specs.items()}
    for m, enc in encs.items():
        if enc.kind != dataset.kind(m):
            raise ValueError(f"encoder {enc.name!r} reads {enc.kind}, but modality {m!r} is {dataset.kind(m)}")

    # every layer is cached in one pass anyway; select the layer(s) the choice needs
    want_all = layers == "auto"
    features: dict[str, dict[str, np.ndarray]] = {}
    present: dict[str, np.ndarray] = {}
    errors: list[RowError] = list(dataset.errors)
    for m in modalities:
        enc = encs[m]
        wanted = None if want_all else [_layer_for(m, enc, layers)]
        features[m], present[m], errs = encode_column(dataset, m, enc, cache, wanted, progress, on_error)
        errors.extend(errs)

    layer_report: dict[str, Any] = {}
    if want_all:
        from modalign.align.layer_selection import select_layers

        chosen, layer_report = select_layers(features, present, modalities, seed=settings.seed)
    else:
        chosen = {m: _layer_for(m, encs[m], layers) for m in modalities}

    group_ids = {g: i for i, g in enumerate(dict.fromkeys(dataset.groups))}
    groups = np.array([group_ids[g] for g in dataset.groups], dtype=np.int64)
    train_idx, val_idx = split_indices(dataset.groups, val_fraction, seed=settings.seed + 1) if val_fraction > 0 \
        else (list(range(len(dataset))), [])

    def part(idx: list[int]) -> TrainData:
        ix = np.asarray(idx, dtype=np.int64)
        return TrainData(features={m: features[m][chosen[m]][ix] for m in modalities},
                         present={m: present[m][ix] for m in modalities}, groups=groups[ix])

    ctx = FitContext(modalities=modalities, train=part(train_idx), val=part(val_idx) if val_idx else None,
                     dim=dim, head=head, head_options=dict(head_options or {}), settings=settings,
                     options=dict(options or {}), locked=tuple(locked), progress=progress)
    heads, info = METHODS.get(method)(ctx)
    out_dim = next(iter(heads.values())).out_dim
    branches = {m: Branch(m, dataset.kind(m), specs[m][0], specs[m][1], chosen[m], heads[m].eval())
                for m in modalities}
    history = info.pop("history", None)
    training = {
        "method": method, "head": head, "head_options": dict(head_options or {}), "dim": out_dim,
        "layers": layers if isinstance(layers, str) else dict(layers), "options": dict(options or {}),
        "settings": vars(settings), "val_fraction": val_fraction, "locked": list(locked),
        "n_rows": len(dataset), "n_train_rows": len(train_idx), "n_val_rows": len(val_idx),
        "n_groups": len(group_ids), "n_skipped": len(errors),
    }
    metrics: dict[str, Any] = {"fit": info, "layers": {"chosen": chosen, **layer_report}}
    if history is not None:
        metrics["history"] = history
    return AlignedModel(branches=branches, dim=out_dim, method=method, training=training, metrics=metrics,
                        fit_errors=errors)


def _layer_for(modality: str, encoder: Encoder, layers: LayerChoice) -> str:
    if isinstance(layers, Mapping):
        layer = layers.get(modality, encoder.default_layer)
        if layer not in encoder.layers:
            raise ValueError(f"encoder {encoder.name!r} has no layer {layer!r}; it has {list(encoder.layers)}")
        return layer
    if layers != "last":
        raise ValueError(f"layers must be 'last', 'auto' or a mapping, got {layers!r}")
    return encoder.default_layer
