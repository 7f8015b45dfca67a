"""Zero-shot classification in an aligned space: items of one modality vs. class names as text.

Each class c is embedded as the normalised mean of its prompt-template embeddings,

    w_c = normalize( (1/T) Σ_t f_text(template_t(name_c)) ),

an item is assigned the class of highest cosine, and we report top-1 / top-5 accuracy, the mean
per-class recall (balanced accuracy, robust to unequal class sizes) and the confusion matrix.
Items are de-duplicated by content like retrieval (``embed_unique``); an item takes the label of
the first row that shows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalign.align.model import AlignedModel
from modalign.data.dataset import PairedDataset
from modalign.evaluation.bootstrap import DEFAULT_BOOT, LEVEL, mean_ci, resample_chunks
from modalign.evaluation.evaluate import ModalityEmbeddings, embed_unique

DEFAULT_TEMPLATES = ("{}", "a picture of {}", "an icon of {}", "a photo of a {}")
TOP_K = 5
MAX_CONFUSION = 100


def read_labels(path: str | Path) -> list[tuple[str, str]]:
    """LABELS.txt: one class per line, ``value`` or ``value<TAB>name used in prompts``; ``#`` starts a comment."""
    out: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        value, _, name = line.partition("\t")
        value, name = value.strip(), (name.strip() or value.strip())
        if value in seen:
            raise ValueError(f"{path}: line {number}: class {value!r} is listed twice (first at line {seen[value]})")
        seen[value] = number
        out.append((value, name))
    if len(out) < 2:
        raise ValueError(f"{path}: zero-shot classification needs at least 2 classes, found {len(out)}")
    return out


def read_templates(path: str | Path) -> list[str]:
    """One prompt template per line; ``{}`` marks where the class name goes."""
    out = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "{}" not in line:
            raise ValueError(f"{path}: line {number}: template {line.strip()!r} has no '{{}}' for the class name")
        out.append(line.strip())
    if not out:
        raise ValueError(f"{path}: no templates found")
    return out


def row_labels(dataset: PairedDataset, field: str) -> list[str | None]:
    """The label of every row from a metadata field (``label``, ``meta_*``) or a text modality."""
    if field in dataset.meta:
        values = dataset.meta[field]
    elif field in dataset.columns and dataset.kind(field) == "text":
        values = dataset.columns[field]
    else:
        fields = sorted(dataset.meta) + [m for m in dataset.modalities if dataset.kind(m) == "text"]
        raise ValueError(f"label field {field!r} is not in the data; fields that can hold labels: {fields}")
    out: list[str | None] = []
    for i, v in enumerate(values):
        if isinstance(v, (list, dict)):
            raise ValueError(f"row id={dataset.ids[i]}: label field {field!r} holds a {type(v).__name__}, "
                             "not one label")
        out.append(None if v is None or v == "" else str(v))
    return out


def _pick_modalities(model: AlignedModel, dataset: PairedDataset, modality: str | None,
                     text_modality: str | None) -> tuple[str, str]:
    texts = [m for m in model.modalities if model.branch(m).kind == "text"]
    if text_modality is None:
        if not texts:
            raise ValueError(f"zero-shot needs a text modality in the model; it has {model.modalities}")
        text_modality = "text" if "text" in texts else texts[0]
    if modality is None:
        others = [m for m in model.modalities if m != text_modality and m in dataset.columns]
        others.sort(key=lambda m: model.branch(m).kind == "text")  # prefer images/audio over other languages
        if not others:
            raise ValueError(f"zero-shot needs a second modality in both model and data ({dataset.modalities})")
        modality = others[0]
    for m in (modality, text_modality):
        model.branch(m)
    return modality, text_modality


def class_embeddings(model: AlignedModel, text_modality: str, names: Sequence[str], templates: Sequence[str],
                     cache: Any = None) -> np.ndarray:
    """(C, dim) unit-norm class embeddings: normalised mean over the prompt templates."""
    prompts = [t.replace("{}", name) for name in names for t in templates]
    z = model.encode(text_modality, prompts, cache=cache).reshape(len(names), len(templates), -1)
    mean = z.mean(axis=1)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def zero_shot(
    model: AlignedModel,
    dataset: PairedDataset,
    *,
    label_field: str = "label",
    labels: Sequence[tuple[str, str]] | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    modality: str | None = None,
    text_modality: str | None = None,
    cache: Any = None,
    embeddings: Mapping[str, ModalityEmbeddings] | None = None,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``"zero_shot"`` JSON block. ``labels``: (value, prompt name) pairs; default: every value seen.
    ``embeddings``: per-modality embeddings of these rows already computed (``EvalResult.embeddings``).
    """
    modality, text_modality = _pick_modalities(model, dataset, modality, text_modality)
    values = row_labels(dataset, label_field)
    if embeddings is not None and modality in embeddings:  # already embedded by the retrieval evaluation
        emb = embeddings[modality]
    else:
        emb, _ = embed_unique(model, dataset, modality, cache)
    item_label: dict[int, str] = {}
    for row, item in enumerate(emb.row_to_item):
        if item >= 0 and values[row] is not None and item not in item_label:
            item_label[int(item)] = values[row]  # type: ignore[assignment]
    classes = list(labels) if labels is not None else [(v, v) for v in sorted(set(item_label.values()))]
    if len(classes) < 2:
        raise ValueError(f"zero-shot needs at least 2 classes; field {label_field!r} has {len(classes)}")
    index = {value: c for c, (value, _) in enumerate(classes)}
    items = np.array(sorted(i for i, v in item_label.items() if v in index), dtype=np.int64)
    if len(items) == 0:
        raise ValueError(f"no {modality} item has a label of field {label_field!r} among the listed classes")
    truth = np.array([index[item_label[int(i)]] for i in items])
    names = [name for _, name in classes]
    weights = class_embeddings(model, text_modality, names, templates, cache)
    scores = emb.embeddings[items] @ weights.T
    order = np.argsort(-scores, axis=1, kind="stable")
    top1 = order[:, 0] == truth
    topk = (order[:, :TOP_K] == truth[:, None]).any(axis=1)
    n_classes = len(classes)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (truth, order[:, 0]), 1)
    support = confusion.sum(axis=1)
    recall = np.divide(np.diag(confusion), support, out=np.full(n_classes, np.nan), where=support > 0)
    return {
        "modality": modality, "text_modality": text_modality, "label_field": label_field,
        "templates": list(templates), "classes": names, "values": [v for v, _ in classes],
        "n": len(items), "unlabelled": int(len(emb.first_row) - len(items)),
        "top1": float(top1.mean()), f"top{TOP_K}": float(topk.mean()),
        "mean_per_class_recall": float(np.nanmean(recall)), "chance_top1": 1.0 / n_classes,
        "CI95": {"top1": mean_ci(top1, n_boot, seed), f"top{TOP_K}": mean_ci(topk, n_boot, seed),
                 "mean_per_class_recall": _balanced_ci(truth, top1, n_classes, n_boot, seed)},
        "per_class": {name: {"n": int(support[c]), "recall": None if np.isnan(recall[c]) else float(recall[c])}
                      for c, name in enumerate(names)},
        # a confusion matrix of thousands of classes is neither readable nor small: left out above MAX_CONFUSION
        **({"confusion": confusion.tolist()} if n_classes <= MAX_CONFUSION else {}),
    }


def _balanced_ci(truth: np.ndarray, hits: np.ndarray, n_classes: int, n_boot: int, seed: int) -> list[float]:
    """CI of the mean per-class recall; per-class counts of all resamples in one bincount (O(B·n), any C)."""
    balanced = []
    for idx in resample_chunks(len(truth), n_boot, seed):
        b = len(idx)
        cells = (np.arange(b)[:, None] * n_classes + truth[idx]).ravel()
        count = np.bincount(cells, minlength=b * n_classes).reshape(b, n_classes)
        hit = np.bincount(cells, weights=hits[idx].ravel().astype(np.float64),
                          minlength=b * n_classes).reshape(b, n_classes)
        with np.errstate(all="ignore"):
            balanced.append(np.nanmean(np.where(count > 0, hit / np.maximum(count, 1), np.nan), axis=1))
    lo, hi = np.nanquantile(np.concatenate(balanced), [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return [float(lo), float(hi)]
