"""``modalign eval``: retrieval metrics of a model on a manifest."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from modalign._io import finite_json
from modalign.align.trained_groups import rows_in_training
from modalign.cli._common import holdout_part, load_dataset, split_settings
from modalign.cli._config import config_option
from modalign.cli._ui import (
    console,
    emit_json,
    err_console,
    fail,
    json_on_stdout,
    metrics_table,
    progress_bars,
    report_skipped,
)
from modalign.data.auto_groups import AUTO_GROUPING, shared_items
from modalign.data.dataset import split_indices
from modalign.errors import ModalignError
from modalign.evaluation.hubness import METHODS as HUBNESS_METHODS
from modalign.evaluation.hubness import PARAMETER as HUBNESS_PARAMETER
from modalign.evaluation.hubness import Hubness
from modalign.evaluation.provenance import eval_provenance

if TYPE_CHECKING:
    from modalign.align.model import AlignedModel
    from modalign.data.dataset import PairedDataset
    from modalign.evaluation.evaluate import EvalResult

#: seed of the half of the evaluated groups a hubness parameter is chosen on when the model kept no
#: validation split (fixed, so two runs score the same half)
HUBNESS_HALF_SEED = 0


def eval_command(
    config: Path | None = config_option(),
    model_dir: Path = typer.Option(..., "--model", help="model directory from `modalign fit`", exists=True),
    data: Path = typer.Option(..., "--data", help="manifest to evaluate on", exists=True, dir_okay=False),
    trust_code: bool = typer.Option(False, "--trust-code", help="let a model or index from someone else run "
                                    "the code its encoders name (py:MODULE:FACTORY, plugins); off: refused"),
    json_out: Path | None = typer.Option(None, "--json", help="write metrics JSON here; '-' prints it "
                                         "on stdout (everything else then goes to stderr)"),
    report: Path | None = typer.Option(None, "--report", help="write an HTML report here"),
    split: str = typer.Option("auto", "--split", help="auto | test | train | all (auto: the fit's held-out groups)"),
    cache: Path | None = typer.Option(None, "--cache", help="feature cache directory"),
    on_error: str = typer.Option("skip", "--on-error", help="skip | fail on a bad row"),
    allow_outside_root: bool = typer.Option(False, "--allow-outside-root", help="allow manifest paths outside "
                                            "the manifest's folder"),
    zero_shot_labels: Path | None = typer.Option(
        None, "--zero-shot", help="zero-shot classification: LABELS.txt, one class per line ('value' or "
        "'value<TAB>prompt name')", exists=True, dir_okay=False),
    label_field: str | None = typer.Option(None, "--label-field", help="zero-shot: field with each row's class "
                                           "(label, meta_*, or a text field); default 'label'"),
    templates: Path | None = typer.Option(None, "--templates", help="zero-shot: prompt templates, one per line "
                                          "with '{}' for the class name", exists=True, dir_okay=False),
    compare: Path | None = typer.Option(None, "--compare", help="second model: paired bootstrap comparison",
                                        exists=True, file_okay=False),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=100, help="bootstrap resamples for CIs and p-values"),
    crosslingual: bool = typer.Option(True, "--crosslingual/--no-crosslingual", help="with >= 2 text modalities: "
                                      "retrieval per language pair and the mean rank variance (MRV)"),
    hubness: str = typer.Option("none", "--hubness", help="none | csls | isoftmax: re-score the cosine matrix "
                                "so that hubs (items near every query) stop crowding the top of every list"),
    hubness_k: str | None = typer.Option(None, "--hubness-k", help="csls: neighbours k, or auto (the default): "
                                         "chosen on the fit's validation split, else on a seeded half of the "
                                         "evaluated groups, and then only the other half is scored"),
    hubness_beta: str | None = typer.Option(None, "--hubness-beta", help="isoftmax: inverse temperature β, or "
                                            "auto (the default, chosen as for --hubness-k)"),
) -> None:
    """Cross-modal retrieval in both directions (R@1/5/10, MRR, median rank) and the modality gap."""
    to_stdout = json_out is not None and str(json_out) == "-"
    with json_on_stdout(to_stdout):
        from modalign.align import load
        from modalign.evaluation import evaluate_detailed
        from modalign.features import FeatureCache

        try:
            model = load(model_dir, trust_code=trust_code)
        except ModalignError as exc:
            raise fail(str(exc)) from None
        by = (model.training.get("grouping") or {}).get("by")
        ds = load_dataset(data, on_error, allow_outside_root, by if by not in (None, "group", AUTO_GROUPING) else None)
        fraction, seed = split_settings(model.training)
        if split == "auto":
            split = "test" if fraction > 0 else "all"
        if split not in ("test", "train", "all"):
            raise fail(f"--split must be auto, test, train or all, got {split!r}")
        given = _hubness_value(hubness, hubness_k, hubness_beta)
        part = ds if split == "all" else holdout_part(ds, fraction, seed, split)
        hub: Hubness | None = None
        hub_block: dict[str, Any] | None = None
        try:
            if hubness != "none":
                hub, part, hub_block = _choose_hubness(model, ds, part, split, fraction, seed, hubness, given, cache)
            with progress_bars() as update:
                result = evaluate_detailed(model, part, FeatureCache(cache), progress=update, hubness=hub)
        except (ModalignError, ValueError, KeyError) as exc:
            raise fail(str(exc)) from None
        if result.n == 0:
            raise fail(f"nothing to score: none of the {len(part)} {split} row(s) holds two of the model's modalities "
                       f"({', '.join(model.modalities)}) that could be encoded")
        payload = result.to_json()
        payload["split"] = split
        if hub_block is not None:
            # plain cosine on the very rows scored: the half fallback makes them fewer than without --hubness
            hub_block["cosine_directions"] = {name: d.cosine_metrics for name, d in result.directions.items()}
            payload["hubness"] = hub_block
        payload["provenance"] = eval_provenance(model_dir, model, data, ["modalign", *sys.argv[1:]])
        if split == "test" and fraction > 0:
            train_part = holdout_part(ds, fraction, seed, "train")
            shared = shared_items((train_part.columns, train_part.kinds), (part.columns, part.kinds))
            if shared:
                err_console.print(f"[yellow]warning:[/] {shared} of the {len(part)} test rows hold a text or file "
                                  "identical to a training row's (their groups differ): these scores are optimistic; "
                                  "give such rows one group")
                payload["test_rows_sharing_items_with_training"] = shared
        seen = rows_in_training(model.training, part.groups)
        if seen is not None:
            payload["training_rows_scored"] = seen
        from modalign.evaluation.report.payload import enrich_payload

        enrich_payload(payload, result, n_boot=bootstrap)
        report_skipped([f"{i} [{m}]: {r}" for i, m, r in result.errors], None)
        title = f"{model_dir.name} on {data.name} ({split}, n={payload['n']})"
        if seen:
            title += f" — {seen} of {len(part)} rows are from groups the model TRAINED on: not a held-out score"
            err_console.print(f"[yellow]warning:[/] {seen} of the {len(part)} rows scored belong to groups the model "
                              "trained on; fit with --holdout and evaluate with --split test for a held-out score")
        label = model.method if hub is None else f"{model.method} + {hub.method}"
        console.print(metrics_table(title, {label: payload["directions"]}))
        console.print(f"modality gap: {payload['modality_gap']:.3f}")
        if hub_block is not None:
            console.print(_hubness_line(hub_block))
        if crosslingual:
            block = _crosslingual(model, result)
            if block is not None:
                payload["crosslingual"] = block
        if zero_shot_labels is not None or label_field is not None:
            payload["zero_shot"] = _zero_shot(model, part, result, cache, zero_shot_labels, label_field, templates,
                                              bootstrap)
        if compare is not None:
            payload["compare"] = _compare(model_dir, compare, part, result, cache, fraction, seed, bootstrap, hub,
                                          trust_code)
        if json_out is not None:
            clean = finite_json(payload)
            if to_stdout:
                emit_json(clean)
            else:
                json_out.parent.mkdir(parents=True, exist_ok=True)
                json_out.write_text(json.dumps(clean, indent=2, allow_nan=False))
                console.print(f"[green]wrote[/] {json_out}")
        if report is not None:
            from modalign.evaluation.report import write_report

            write_report(report, model, part, result, payload)
            console.print(f"[green]wrote[/] {report}")


def _zero_shot(model: AlignedModel, part: PairedDataset, result: EvalResult, cache: Path | None,
               labels_path: Path | None, label_field: str | None, templates_path: Path | None,
               n_boot: int) -> dict[str, Any]:
    from modalign.evaluation.zeroshot import DEFAULT_TEMPLATES, read_labels, read_templates, zero_shot
    from modalign.features import FeatureCache

    try:
        labels = read_labels(labels_path) if labels_path is not None else None
        templates = read_templates(templates_path) if templates_path is not None else DEFAULT_TEMPLATES
        z = zero_shot(model, part, label_field=label_field or "label", labels=labels, templates=templates,
                      cache=FeatureCache(cache), embeddings=result.embeddings, n_boot=n_boot)
    except (ModalignError, ValueError, KeyError, OSError) as exc:
        raise fail(f"zero-shot: {exc}") from None
    ci = z["CI95"]
    console.print(
        f"zero-shot {z['modality']} → {len(z['classes'])} classes of {z['label_field']!r} (n={z['n']}): "
        f"top-1 {z['top1']:.3f} [{ci['top1'][0]:.3f}, {ci['top1'][1]:.3f}]  top-5 {z['top5']:.3f}  "
        f"mean per-class recall {z['mean_per_class_recall']:.3f}  (chance {z['chance_top1']:.3f})")
    return z


def _compare(model_dir: Path, other_dir: Path, part: PairedDataset, result: EvalResult, cache: Path | None,
             fraction: float, seed: int, n_boot: int, hub: Hubness | None = None,
             trust_code: bool = False) -> dict[str, Any]:
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    from modalign.align import load
    from modalign.evaluation import evaluate_detailed
    from modalign.evaluation.compare import compare_results
    from modalign.features import FeatureCache

    try:
        other = load(other_dir, trust_code=trust_code)
    except ModalignError as exc:
        raise fail(str(exc)) from None
    if split_settings(other.training) != (fraction, seed):
        err_console.print(f"[yellow]warning:[/] {other_dir.name} was fitted with another holdout split "
                          f"{split_settings(other.training)}; it may have trained on these test concepts")
    try:
        with progress_bars() as update:
            # the same re-scoring for B, or the comparison would measure CSLS rather than the models
            res_b = evaluate_detailed(other, part, FeatureCache(cache), progress=update, hubness=hub)
        block = compare_results(result, res_b, (model_dir.name, other_dir.name), n_boot=n_boot)
    except (ModalignError, ValueError, KeyError) as exc:
        raise fail(str(exc)) from None
    block["split_matches"] = split_settings(other.training) == (fraction, seed)
    if hub is not None:
        block["hubness"] = hub.to_json()
    table = Table(title=f"A = {model_dir.name}  vs  B = {other_dir.name} (paired bootstrap over queries)")
    for col in ("direction", "metric", "A", "B", "B − A", "95% CI", "p"):
        table.add_column(col, justify="left" if col in ("direction", "metric") else "right", no_wrap=True)
    for direction, d in block["directions"].items():
        for i, (metric, s) in enumerate(d["metrics"].items()):
            lo, hi = s["CI95_delta"]
            style = "bold green" if s["p_value"] < 0.05 else ""
            table.add_row(direction if i == 0 else "", metric, f"{s['a']:.3f}", f"{s['b']:.3f}",
                          f"{s['delta']:+.3f}", f"[{lo:+.3f}, {hi:+.3f}]", f"[{style}]{s['p_value']:.4f}[/]" if style
                          else f"{s['p_value']:.4f}", end_section=i == len(d["metrics"]) - 1)
    # never cut a number: at 80 columns or in a pipe the table is printed at its natural width instead
    natural = Measurement.get(console, console.options.update(max_width=10_000), table).maximum
    wide = Console(file=console.file, width=max(console.width, natural), force_terminal=console.is_terminal,
                   color_system=console.color_system)  # type: ignore[arg-type]
    wide.print(table)
    return block


def _crosslingual(model: AlignedModel, result: EvalResult) -> dict[str, Any] | None:
    from rich.table import Table

    from modalign.evaluation.crosslingual import crosslingual_report

    block = crosslingual_report(result, {m: b.kind for m, b in model.branches.items()})
    if block is None:
        return None
    console.print(metrics_table("cross-lingual: language pairs", {model.method: block["pairs"]},
                                keys=("R@1", "R@5", "MRR", "median_rank")))
    for pivot, p in block["pivots"].items():
        table = Table(title=f"languages ↔ {pivot} on the {p['n_rows']} rows that have all of them "
                            f"(MRV: mean rank variance across languages, 0 = consistent)")
        for col in ("language", f"→{pivot} R@1", f"→{pivot} MRR", f"{pivot}→ R@1", f"{pivot}→ MRR"):
            table.add_column(col, justify="left" if col == "language" else "right")
        for lang in p["languages"]:
            to, frm = p["to"][lang], p["from"][lang]
            table.add_row(lang, f"{to['R@1']:.3f}", f"{to['MRR']:.3f}", f"{frm['R@1']:.3f}", f"{frm['MRR']:.3f}")
        table.add_row("MRV", f"{p['MRV_to']:.2f}", "", f"{p['MRV_from']:.2f}", "", style="bold")
        console.print(table)
    return block


def _hubness_value(method: str, k: str | None, beta: str | None) -> float | None:
    """The parameter given for ``method`` (None: auto); fails on a value for another method."""
    if method not in HUBNESS_METHODS:
        raise fail(f"--hubness must be one of {', '.join(HUBNESS_METHODS)}, got {method!r}")
    for option, value, owner in (("--hubness-k", k, "csls"), ("--hubness-beta", beta, "isoftmax")):
        if value is not None and method != owner:
            raise fail(f"{option} is the parameter of --hubness {owner}, not of --hubness {method}")
    raw = k if method == "csls" else beta
    if raw is None or raw.strip().lower() == "auto":
        return None
    try:
        value = float(raw)
        Hubness(method, value)  # validates: k a positive integer, β positive
    except ValueError:
        kind = "a positive integer" if method == "csls" else "a positive number"
        raise fail(f"--hubness-{HUBNESS_PARAMETER[method]} must be {kind} or auto, got {raw!r}") from None
    return value


def _part_info(name: str, dataset: PairedDataset) -> dict[str, Any]:
    return {"part": name, "rows": len(dataset), "groups": len(set(dataset.groups))}


def _fit_validation_part(model: AlignedModel, ds: PairedDataset, fraction: float,
                         seed: int) -> PairedDataset | None:
    """The rows the fit validated on, rebuilt from ``ds`` when it holds exactly the rows fit trained on.

    The validation split is a seeded function of the training groups (``split_indices``), so it can
    only be rebuilt from the same set: anything else (another manifest, an added modality) gives None.
    """
    t = model.training
    val_fraction = float(t.get("val_fraction") or 0.0)
    if val_fraction <= 0 or not t.get("n_val_rows") or t.get("progressive"):
        return None
    train = holdout_part(ds, fraction, seed, "train")
    recorded = t.get("trained_groups") or {}
    if (len(train) != t.get("n_rows") or rows_in_training(t, train.groups) != len(train)
            or recorded.get("n") != len(set(train.groups))):
        return None
    fit_seed = int((t.get("settings") or {}).get("seed", 0))
    _, val_idx = split_indices(list(train.groups), val_fraction, seed=fit_seed + 1)
    if len(val_idx) != t["n_val_rows"]:
        return None
    return train.subset(val_idx)


def _choose_hubness(model: AlignedModel, ds: PairedDataset, part: PairedDataset, split: str, fraction: float,
                    seed: int, method: str, given: float | None,
                    cache: Path | None) -> tuple[Hubness, PairedDataset, dict[str, Any]]:
    """The re-scoring to apply, the rows to score with it, and the JSON block saying how both were chosen."""
    from modalign.evaluation import evaluate_detailed
    from modalign.evaluation.hubness import choose_parameter
    from modalign.features import FeatureCache

    if given is not None:
        hub = Hubness(method, given)
        return hub, part, {**hub.to_json(), "chosen_on": {"part": "given"}, "scored_on": _part_info(split, part)}
    tune = _fit_validation_part(model, ds, fraction, seed)
    if tune is not None:
        chosen_on = _part_info("validation", tune)
        if split != "test":  # the scored rows then include the ones the parameter was chosen on
            chosen_on["also_scored"] = True
    else:
        if len(set(part.groups)) < 2:
            raise fail(f"--hubness {method}: the model kept no validation split and the {split} rows have one "
                       f"group, too few to choose {HUBNESS_PARAMETER[method]} on half; give "
                       f"--hubness-{HUBNESS_PARAMETER[method]}")
        # concept-disjoint halves, so no concept helps choose the parameter it is then scored with
        score_idx, tune_idx = split_indices(list(part.groups), 0.5, seed=HUBNESS_HALF_SEED)
        tune, part = part.subset(tune_idx), part.subset(score_idx)
        chosen_on = {**_part_info(f"{split} half", tune), "seed": HUBNESS_HALF_SEED}
    with progress_bars() as update:
        res = evaluate_detailed(model, tune, FeatureCache(cache), progress=update)
    value, scores = choose_parameter(method, [(d.similarity, d.relevant) for d in res.directions.values()])
    hub = Hubness(method, value)
    scored_on = _part_info(split if chosen_on["part"] == "validation" else f"{split} other half", part)
    block = {**hub.to_json(), "chosen_on": chosen_on, "scored_on": scored_on,
             "grid_MRR": {_fmt(v): s for v, s in scores.items()}}
    return hub, part, block


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _hubness_line(block: dict[str, Any]) -> str:
    param = HUBNESS_PARAMETER[block["method"]]
    chosen, scored = block["chosen_on"], block["scored_on"]
    if chosen["part"] == "given":
        how = "given"
    else:
        how = f"chosen on the {chosen['part']} rows ({chosen['rows']} rows, {chosen['groups']} groups)"
    text = (f"hubness: {block['method']} {param}={_fmt(block[param])} ({how}); scored on the {scored['part']} rows "
            f"({scored['rows']} rows, {scored['groups']} groups)")
    if chosen.get("also_scored"):
        text += " [yellow]— they include the validation rows it was chosen on[/]"
    return text
