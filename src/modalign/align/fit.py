"""``fit``: manifest rows → cached frozen features → a method's heads → an AlignedModel."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from modalign.align import auto as _auto  # noqa: F401  (registers the "auto" method)
from modalign.align import trained_groups
from modalign.align.encoder_choice import auto_modalities, choose_encoders
from modalign.align.heads.base import Head, check_trainable_head
from modalign.align.method_choice import resolve_method, settings_arguments, training_arguments
from modalign.align.methods import METHODS, FitContext
from modalign.align.model import AlignedModel, Branch
from modalign.align.seeds import check_seeds, fit_seeds
from modalign.align.trainer import TrainData, TrainerSettings
from modalign.data.dataset import PairedDataset, RowError, split_indices
from modalign.data.unpaired import with_unpaired
from modalign.data.vector_values import column_dim
from modalign.encoders import DEFAULT_ENCODER_FOR_KIND, Encoder, EncoderChoice, get_encoder, split_choice
from modalign.encoders.spec import layer_choice
from modalign.features import FeatureCache, extract
from modalign.features.reader import CorruptShardError, matrix_for_keys

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
LayerChoice = Literal["last", "auto"] | Mapping[str, str]


def resolve_encoder(dataset: PairedDataset, modality: str,
                    name: EncoderChoice | None = None) -> tuple[str, dict[str, Any]]:
    """Encoder spec + options for a modality (default by kind; vector dim read from the data).

    ``name`` is a spec (``minilm``, ``hf:PATH``...), ``(spec, {options})`` or an encoder object.
    """
    kind = dataset.kind(modality)
    name, config = split_choice(name or DEFAULT_ENCODER_FOR_KIND[kind])
    if name == "vectors" and "dim" not in config:
        # the majority of rows decides (a bad first row is then just one skipped row, not the column's dim)
        dim = column_dim(dataset.columns[modality])
        if dim is None:
            raise ValueError(f"modality {modality!r} has no readable vectors")
        config["dim"] = dim
    return name, config


def encode_column(
    dataset: PairedDataset,
    modality: str,
    encoder: Encoder,
    cache: FeatureCache | None,
    layers: Sequence[str] | None,
    progress: Progress | None = None,
    on_error: Literal["skip", "fail"] = "skip",
    stream: bool = False,
) -> tuple[dict[str, Any], np.ndarray, list[RowError]]:
    """Features of every row (zeros where missing or failed) + the mask of rows that have them.

    ``stream`` (with a cache): each layer is a ``CachedMatrix`` over the cache's memory-mapped shards
    instead of an array, so a column larger than RAM costs only its row index; training then reads
    each batch's rows from disk. Without it (or without a cache) the features are loaded whole.
    """
    present = dataset.present(modality)
    rows = np.flatnonzero(present)
    total = len(rows)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(f"encode {modality}", min(done[0], total), total)

    items = dataset.items(modality, rows)
    stream = stream and cache is not None
    for _attempt in range(3):  # a shard found corrupt when mapped is dropped: extracting again re-encodes it
        done[0] = 0
        res = extract(encoder, items, cache, layers=layers, progress=tick, on_error=on_error, fetch=not stream)
        wanted = list(res.features)
        ok_rows = rows[res.ok]
        mask = np.zeros(len(dataset), dtype=bool)
        mask[ok_rows] = True
        if not stream:
            feats: dict[str, Any] = {layer: np.zeros((len(dataset), encoder.layer_dims[layer]), np.float32)
                                     for layer in wanted}
            for layer in wanted:
                feats[layer][ok_rows] = res.features[layer]
            break
        assert cache is not None
        keys: list[bytes | None] = [None] * len(dataset)
        for i in np.flatnonzero(res.ok):
            keys[rows[i]] = res.keys[i]
        store = cache.store(encoder.cache_id, encoder.layer_dims)
        try:
            feats = {layer: matrix_for_keys(store, keys, layer)[0] for layer in wanted}
        except CorruptShardError as exc:
            log.warning("%s; encoding its rows again", exc)
            continue
        break
    else:
        raise RuntimeError(f"modality {modality!r}: the feature cache kept failing its checksums; "
                           f"delete {cache.root if cache is not None else 'it'} and run again")
    errors = [RowError(row="-", id=dataset.ids[rows[i]], field=modality, reason=reason) for i, reason in res.errors]
    return feats, mask, errors


@dataclass
class ArrayFit:
    """What ``fit_arrays`` learnt: heads, the layers used and the facts for metrics.json."""

    heads: dict[str, Head]
    chosen: dict[str, str]
    info: dict[str, Any]
    layer_report: dict[str, Any]
    n_train: int
    n_val: int
    n_groups: int
    layer_dims: dict[str, int]


def fit_arrays(
    features: Mapping[str, Mapping[str, np.ndarray]],
    present: Mapping[str, np.ndarray],
    groups: Sequence[str],
    modalities: Sequence[str],
    *,
    default_layers: Mapping[str, str],
    method: str = "infonce",
    head: str = "linear",
    head_options: Mapping[str, Any] | None = None,
    dim: int = 256,
    layers: LayerChoice = "last",
    val_fraction: float = 0.1,
    settings: TrainerSettings | None = None,
    options: Mapping[str, Any] | None = None,
    locked: Sequence[str] = (),
    progress: Progress | None = None,
    input_norm: str = "center",
    seeds: int = 1,
    ensemble: bool = False,
) -> ArrayFit:
    """The part of ``fit`` after encoding: ``features[m][layer]`` (n_rows, D) with ``present[m]``.

    Benchmarks call it directly to fit many configurations on features encoded once.
    """
    modalities = list(modalities)
    check_seeds(method, seeds, ensemble)
    check_trainable_head(head)
    settings = settings or TrainerSettings()
    layer_report: dict[str, Any] = {}
    if layers == "auto":
        from modalign.align.layer_selection import select_layers

        chosen, layer_report = select_layers({m: dict(features[m]) for m in modalities}, dict(present), modalities,
                                             seed=settings.seed)
    else:
        chosen = {m: _layer_for(m, list(features[m]), default_layers[m], layers) for m in modalities}

    group_ids = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    group_index = np.array([group_ids[g] for g in groups], dtype=np.int64)
    train_idx, val_idx = split_indices(list(groups), val_fraction, seed=settings.seed + 1) if val_fraction > 0 \
        else (list(range(len(groups))), [])

    def part(idx: list[int]) -> TrainData:
        ix = np.asarray(idx, dtype=np.int64)
        return TrainData(features={m: features[m][chosen[m]][ix] for m in modalities},
                         present={m: present[m][ix] for m in modalities}, groups=group_index[ix])

    ctx = FitContext(modalities=modalities, train=part(train_idx), val=part(val_idx) if val_idx else None,
                     dim=dim, head=head, head_options=dict(head_options or {}), settings=settings,
                     options=dict(options or {}), locked=tuple(locked), progress=progress, input_norm=input_norm)
    fit_one = METHODS.get(method)
    heads, info = fit_seeds(fit_one, ctx, seeds, ensemble) if seeds > 1 else fit_one(ctx)
    return ArrayFit(heads={m: h.eval() for m, h in heads.items()}, chosen=chosen, info=info,
                    layer_report=layer_report, n_train=len(train_idx), n_val=len(val_idx), n_groups=len(group_ids),
                    layer_dims={m: int(features[m][chosen[m]].shape[1]) for m in modalities})


def fit(
    dataset: PairedDataset,
    modalities: Sequence[str],
    *,
    encoders: Mapping[str, EncoderChoice] | None = None,
    method: str | None = None,
    head: str = "linear",
    head_options: Mapping[str, Any] | None = None,
    dim: int = 256,
    layers: LayerChoice = "last",
    cache: FeatureCache | None = None,
    val_fraction: float = 0.1,
    settings: TrainerSettings | None = None,
    options: Mapping[str, Any] | None = None,
    lock: Sequence[str] = (),
    on_error: Literal["skip", "fail"] = "skip",
    progress: Progress | None = None,
    seeds: int = 1,
    ensemble: bool = False,
    locked: Sequence[str] | None = None,
    unpaired: PairedDataset | None = None,
    held_out: PairedDataset | None = None,
) -> AlignedModel:
    """Fit heads aligning ``modalities`` of ``dataset`` (use ``dataset.split`` first to hold out a test set).

    ``method``: ``auto`` (default: group k-fold cross-validation on these rows over closed forms and
    trained losses, then a refit of the winner; ``options`` ``candidates`` / ``cv_folds`` / ``time_budget``),
    a trained loss (infonce, siglip, cwcl, gram, symile) or a closed form (procrustes, cca, ridge, semi-cca).
    Left at None it is ``auto``, or ``infonce`` when a training-only argument is given (a non-default
    schedule, batch size, workers or grad_chunks in ``settings``, a non-linear ``head``, ``structure`` /
    ``intra`` in ``options``, ``seeds`` > 1): the rule of ``modalign fit`` (``method_choice``).
    ``seeds``: train a trained method that many times (seeds ``settings.seed`` + 0..N-1) and record the
    spread of the validation metrics in ``metrics["fit"]["seeds"]``; ``ensemble`` keeps all N heads
    averaged (``EnsembleHead``) instead of the first seed's;
    ``options`` holds its knobs and regularizer weights (``{"structure": 10}``);
    ``lock`` modalities keep their frozen features (identity head), the others map into them (``--lock``;
    ``locked`` is its former name, still accepted with a DeprecationWarning).
    ``unpaired``: rows holding one of the modalities only (the corpus beyond the pairs), added to the training
    rows; auto then also tries ``semi-cca``, which learns from them. Rows whose item or group is in ``held_out``
    (the test part) are dropped, so a test item never trains (``data.unpaired.with_unpaired``).
    """
    if locked is not None:
        warnings.warn("fit(locked=...) is now fit(lock=...), as the CLI's --lock", DeprecationWarning, stacklevel=2)
        lock = locked
    locked = tuple(lock)
    modalities = list(modalities)
    given = training_arguments(head=head, seeds=seeds, **settings_arguments(settings, options))
    method = resolve_method(method, given, (options or {}).get("candidates"))
    check_seeds(method, seeds, ensemble)
    if len(modalities) < 2:
        raise ValueError(f"need at least two modalities to align, got {modalities}")
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"a modality is listed twice in {modalities}")
    for m in modalities:
        if m not in dataset.columns:
            raise ValueError(f"modality {m!r} is not in the data; it has {dataset.modalities}")
    for m in locked:
        if m not in modalities:
            raise ValueError(f"locked modality {m!r} is not one of {modalities}")
    unpaired_report = None
    if unpaired is not None:
        dataset, unpaired_report = with_unpaired(dataset, unpaired, modalities, held_out)
    METHODS.get(method)  # unknown method: fail before any encoding
    check_trainable_head(head)
    settings = settings or TrainerSettings()
    encoders = dict(encoders or {})
    cache = cache if cache is not None else FeatureCache()
    asked_layers = layers
    clash = sorted(set(layers) & set(auto_modalities(encoders))) if isinstance(layers, Mapping) else []
    if clash:
        raise ValueError(f"a layer name belongs to one encoder: with the encoder auto for {clash}, give layers "
                         "'last' or 'auto'")
    choice_options = {k: v for k, v in (options or {}).items() if method == "auto" and k in ("candidates", "cv_folds")}

    def fit_sample(feats: dict[str, dict[str, Any]], present: dict[str, np.ndarray], groups: list[str],
                   default_layers: dict[str, str]) -> dict[str, Any]:
        # the same CV as the default fit's (its candidates when auto was asked for, else auto's own), on the
        # sample's rows; no time budget, so the choice does not depend on the machine
        return fit_arrays(feats, present, groups, modalities, default_layers=default_layers, method="auto",
                          dim=dim, val_fraction=0.0, settings=settings, options=choice_options, locked=locked).info

    encoders, selection = choose_encoders(dataset, modalities, encoders, cache, fit_sample, seed=settings.seed,
                                          progress=progress)

    specs = {m: resolve_encoder(dataset, m, encoders.get(m)) for m in modalities}
    given = {m: e for m, e in encoders.items() if isinstance(e, Encoder)}  # objects are used as they are
    if isinstance(layers, Mapping):  # "head+final": one layer per part (or several of one encoder), concatenated
        layers = dict(layers)
        for m, layer in list(layers.items()):
            combo = layer_choice(*specs[m], layer) if m in specs and m not in given else None
            if combo is not None:
                specs[m], layers[m] = combo, "concat"
    encs = {m: given.get(m) or get_encoder(name, **cfg) for m, (name, cfg) in specs.items()}
    for m, enc in encs.items():
        if enc.kind != dataset.kind(m):
            raise ValueError(f"encoder {enc.name!r} reads {enc.kind}, but modality {m!r} is {dataset.kind(m)}")

    # every layer is cached in one pass anyway; select the layer(s) the choice needs
    features: dict[str, dict[str, Any]] = {}
    present: dict[str, np.ndarray] = {}
    errors: list[RowError] = list(dataset.errors)
    for m in modalities:
        enc = encs[m]
        wanted = None if layers == "auto" else [_layer_for(m, list(enc.layers), enc.default_layer, layers)]
        features[m], present[m], errs = encode_column(dataset, m, enc, cache, wanted, progress, on_error,
                                                      stream=True)
        errors.extend(errs)

    result = fit_arrays(features, present, dataset.groups, modalities,
                        default_layers={m: e.default_layer for m, e in encs.items()}, method=method, head=head,
                        head_options=head_options, dim=dim, layers=layers, val_fraction=val_fraction,
                        settings=settings, options=options, locked=locked, progress=progress, seeds=seeds,
                        ensemble=ensemble)
    heads, info = result.heads, dict(result.info)
    out_dim = next(iter(heads.values())).out_dim
    branches = {m: Branch(m, dataset.kind(m), specs[m][0], specs[m][1], result.chosen[m], heads[m],
                          encoder_weights=encs[m].weights_sha256) for m in modalities}
    history = info.pop("history", None)
    training = {
        "method": method, "head": head, "head_options": dict(head_options or {}), "dim": out_dim,
        "layers": asked_layers if isinstance(asked_layers, str) else dict(asked_layers), "options": dict(options or {}),
        "settings": vars(settings), "val_fraction": val_fraction, "locked": list(locked),
        "n_rows": len(dataset), "n_train_rows": result.n_train, "n_val_rows": result.n_val,
        "n_groups": result.n_groups, "n_skipped": len(errors),
        "trained_groups": trained_groups.record(dataset.groups),
    }
    if out_dim != dim:
        training.update(dim_requested=dim, dim_note=dim_reason(out_dim, dim, locked, {
            m: int(result.layer_dims[m]) for m in modalities}, result.n_train + result.n_val))
    if seeds > 1:
        training.update(seeds=seeds, ensemble=ensemble)
    if unpaired_report is not None:
        training["unpaired"] = unpaired_report.to_json()
    metrics: dict[str, Any] = {"fit": info, "layers": {"chosen": result.chosen, **result.layer_report}}
    if history is not None:
        metrics["history"] = history
    if selection is not None:
        metrics["encoders"] = selection.to_json()
    return AlignedModel(branches=branches, dim=out_dim, method=method, training=training, metrics=metrics,
                        fit_errors=errors)


def dim_reason(out_dim: int, asked: int, locked: Sequence[str], widths: Mapping[str, int], n_rows: int) -> str:
    """Why the space has ``out_dim`` dimensions when ``asked`` were asked for, in one sentence."""
    if locked:
        return f"the space is the locked modality {locked[0]!r}'s own features, {widths[locked[0]]}-d"
    if out_dim < asked:
        caps = ", ".join(f"{m} features {w}" for m, w in widths.items())
        return (f"a closed-form space has at most min(feature widths, training pairs - 1) dimensions: {caps}, "
                f"{n_rows} training rows")
    return f"the method fixed {out_dim} dimensions"


def _layer_for(modality: str, available: Sequence[str], default: str, layers: LayerChoice) -> str:
    if isinstance(layers, Mapping):
        layer = layers.get(modality, default)
        if layer not in available:
            raise ValueError(f"modality {modality!r}: no layer {layer!r}; its encoder has {list(available)}")
        return layer
    if layers != "last":
        raise ValueError(f"layers must be 'last', 'auto' or a mapping, got {layers!r}")
    return default
