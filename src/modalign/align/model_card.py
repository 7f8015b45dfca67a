"""The model card: ``README.md`` written beside the weights, for whoever finds the folder later.

It says what the model was fitted on, how, how well it did (with the 95% intervals when metrics.json
has them) and what it is and is not for. Everything in it is read from the model's own config and
metrics, so the card cannot disagree with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modalign.align.methods import CLOSED_FORM_METHODS
from modalign.features.cache import atomic_write_bytes

if TYPE_CHECKING:  # annotation only: model.py imports this module
    from modalign.align.model import AlignedModel

RETRIEVAL_KEYS = ("R@1", "R@5", "R@10", "MRR", "median_rank")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _scalars(block: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Numeric leaves of the metrics (``fit.val_R@1`` ...), lists and per-epoch history left out."""
    out: list[tuple[str, Any]] = []
    for key, value in block.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out.append((name, value))
        elif isinstance(value, dict) and key not in ("directions", "CI95", "history", "options", "params"):
            out.extend(_scalars(value, name + "."))
    return out


def _directions(block: Any, where: str = "") -> list[str]:
    """Markdown rows ``| where | direction | metric | value | 95% CI |`` for every ``directions`` block."""
    rows: list[str] = []
    if not isinstance(block, dict):
        return rows
    if isinstance(block.get("directions"), dict):
        for direction, m in block["directions"].items():
            ci = m.get("CI95") or {}
            for key in RETRIEVAL_KEYS:
                if key in m:
                    lo_hi = ci.get(key)
                    interval = f"[{_fmt(lo_hi[0])}, {_fmt(lo_hi[1])}]" if lo_hi else "–"
                    rows.append(f"| {where or '-'} | {direction} | {key} | {_fmt(m[key])} | {interval} |")
    for key, value in block.items():
        if key != "directions" and isinstance(value, dict):
            rows.extend(_directions(value, f"{where}.{key}" if where else key))
    return rows


#: the trainer settings a trained method reads; closed forms read none of them
TRAINED_SETTINGS = ("steps", "epochs", "batch_size", "lr", "weight_decay", "warmup", "seed", "patience")


def _fitted(model: AlignedModel) -> tuple[str, dict[str, Any], bool]:
    """(the method actually fitted, its knobs, whether it was trained): auto's pick, not "auto"."""
    fit = model.metrics.get("fit") or {}
    auto = fit.get("auto") if isinstance(fit.get("auto"), dict) else None
    if auto is not None:
        knobs = {**auto.get("options", {}), "input_norm": auto.get("input_norm")}
        return str(auto.get("picked")), knobs, auto.get("method") not in CLOSED_FORM_METHODS
    method = model.method
    trained = method not in CLOSED_FORM_METHODS
    return method, dict(fit.get("params") or {}) if not trained else {}, trained


def _row_use(model: AlignedModel) -> str:
    t = model.training
    fit = model.metrics.get("fit") or {}
    auto = fit.get("auto") if isinstance(fit.get("auto"), dict) else None
    _, _, trained = _fitted(model)
    if auto is not None and not trained:
        return (f"{auto.get('cv_rows', '?')} training rows, all used by the fit; auto chose it by {auto.get('folds')}-"
                "fold group cross-validation on them")
    return f"{t.get('n_train_rows', '?')} train, {t.get('n_val_rows', '?')} validation"


def _method_lines(model: AlignedModel) -> list[str]:
    """The fitted method and only the settings it read, each once."""
    t = model.training
    name, knobs, trained = _fitted(model)
    knob_text = ", ".join(f"{k}={v}" for k, v in knobs.items() if v is not None)
    lines = [f"Method `{name}`" + (f" (chosen by `{model.method}`)" if name != model.method else "")
             + (f": {knob_text}" if knob_text else "") + f"; dimension {model.dim}."]
    if t.get("dim_note"):
        lines.append(f"The dimension is {model.dim}, not the {t.get('dim_requested')} asked for: {t['dim_note']}.")
    if trained:
        settings = t.get("settings") or {}
        used = ", ".join(f"{k}={settings[k]}" for k in TRAINED_SETTINGS if settings.get(k) is not None)
        lines.append(f"Head `{t.get('head', '?')}`; training: {used}.")
    return lines


def render_model_card(model: AlignedModel) -> str:
    t = model.training
    holdout = t.get("holdout") or {}
    lines = [
        "# modalign aligned model", "",
        f"A shared {model.dim}-d embedding space for {', '.join(model.modalities)}, fitted by modalign with "
        f"the **{model.method}** method on frozen encoders (only the small heads were trained).", "",
        "## Data", "",
        f"- manifest: `{t.get('manifest', 'unknown')}`",
        f"- rows: {t.get('n_rows', '?')} ({_row_use(model)}), "
        f"groups: {t.get('n_groups', '?')}, skipped bad rows: {t.get('n_skipped', 0)}",
        f"- held-out groups: {holdout.get('fraction', 0)} of the groups (seed {holdout.get('seed', 0)}), never seen "
        "in training; `modalign eval --split test` scores on them", "",
        "## Method", "",
        "| modality | kind | encoder | layer | head |", "|---|---|---|---|---|",
    ]
    for m, b in model.branches.items():
        lines.append(f"| {m} | {b.kind} | `{b.encoder}` | {b.layer} | {b.head.config().get('name', '?')} |")
    lines += ["", *_method_lines(model), "", "## Metrics", ""]
    rows = _directions(model.metrics)
    if rows:
        lines += ["| block | direction | metric | value | 95% CI |", "|---|---|---|---|---|", *rows, ""]
    scalars = _scalars(model.metrics)
    if isinstance((model.metrics.get("fit") or {}).get("auto"), dict):  # auto's val_R@1 is its CV mean: once
        scalars = [(k, v) for k, v in scalars if k != "fit.val_R@1"]
    if scalars:
        lines += [f"- {name}: {_fmt(value)}" for name, value in scalars] + [""]
    if not rows and not scalars:
        lines += ["No metrics were recorded at fit time; run `modalign eval` for retrieval metrics with CIs.", ""]
    lines += [
        "Validation numbers come from rows of the training groups; for an unbiased score, evaluate on the "
        "held-out groups (`modalign eval --model THIS_FOLDER --data MANIFEST --json eval.json`).", "",
        "## Intended use", "",
        "Cross-modal retrieval and search between the modalities above (`modalign index` / `modalign serve`), "
        "and comparing how well frozen encoders align, on data like the training manifest.", "",
        "## Limits", "",
        "- Only as good as the frozen encoders and the pairs: concepts far from the training data retrieve worse.",
        "- Scores are cosine similarities in this space; they are not calibrated probabilities, and scores across "
        "modalities are not comparable with scores within one (modality gap).",
        "- The encoders must be the same ones (same weights) when the model is loaded; modalign refuses others.",
        "- Not evaluated for fairness or for high-stakes decisions; do not use it for them without your own "
        "evaluation.", "",
    ]
    return "\n".join(lines)


def write_model_card(model: AlignedModel, directory: Path) -> Path:
    path = Path(directory) / "README.md"
    atomic_write_bytes(path, render_model_card(model).encode("utf-8"))
    return path
