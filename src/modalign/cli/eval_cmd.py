"""``modalign eval``: retrieval metrics of a model on a manifest."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from modalign.align.trained_groups import rows_in_training
from modalign.cli._common import holdout_part, load_dataset, split_settings
from modalign.cli._ui import console, err_console, fail, metrics_table, progress_bars, report_skipped
from modalign.errors import ModalignError
from modalign.evaluation.provenance import eval_provenance

if TYPE_CHECKING:
    from modalign.align.model import AlignedModel
    from modalign.data.dataset import PairedDataset
    from modalign.evaluation.evaluate import EvalResult


def eval_command(
    model_dir: Path = typer.Option(..., "--model", help="model directory from `modalign fit`", exists=True),
    data: Path = typer.Option(..., "--data", help="manifest to evaluate on", exists=True, dir_okay=False),
    json_out: Path | None = typer.Option(None, "--json", help="write metrics JSON here"),
    report: Path | None = typer.Option(None, "--report", help="write an HTML report here"),
    split: str = typer.Option("auto", "--split", help="auto | test | train | all (auto: the fit's held-out groups)"),
    cache: Path | None = typer.Option(None, "--cache", help="feature cache directory"),
    on_error: str = typer.Option("skip", "--on-error", help="skip | fail on a bad row"),
    allow_outside_root: bool = typer.Option(False, "--allow-outside-root"),
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
) -> None:
    """Cross-modal retrieval in both directions (R@1/5/10, MRR, median rank) and the modality gap."""
    from modalign.align import load
    from modalign.evaluation import evaluate_detailed
    from modalign.features import FeatureCache

    try:
        model = load(model_dir)
    except ModalignError as exc:
        raise fail(str(exc)) from None
    ds = load_dataset(data, on_error, allow_outside_root)
    fraction, seed = split_settings(model.training)
    if split == "auto":
        split = "test" if fraction > 0 else "all"
    if split not in ("test", "train", "all"):
        raise fail(f"--split must be auto, test, train or all, got {split!r}")
    part = ds if split == "all" else holdout_part(ds, fraction, seed, split)
    try:
        with progress_bars() as update:
            result = evaluate_detailed(model, part, FeatureCache(cache), progress=update)
    except (ModalignError, ValueError, KeyError) as exc:
        raise fail(str(exc)) from None
    payload = result.to_json()
    payload["split"] = split
    payload["provenance"] = eval_provenance(model_dir, model, data, ["modalign", *sys.argv[1:]])
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
    console.print(metrics_table(title,
                                {model.method: payload["directions"]}))
    console.print(f"modality gap: {payload['modality_gap']:.3f}")
    if crosslingual:
        block = _crosslingual(model, result)
        if block is not None:
            payload["crosslingual"] = block
    if zero_shot_labels is not None or label_field is not None:
        payload["zero_shot"] = _zero_shot(model, part, result, cache, zero_shot_labels, label_field, templates,
                                          bootstrap)
    if compare is not None:
        payload["compare"] = _compare(model_dir, compare, part, result, cache, fraction, seed, bootstrap)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(payload, indent=2))
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
             fraction: float, seed: int, n_boot: int) -> dict[str, Any]:
    from rich.table import Table

    from modalign.align import load
    from modalign.evaluation import evaluate_detailed
    from modalign.evaluation.compare import compare_results
    from modalign.features import FeatureCache

    try:
        other = load(other_dir)
    except ModalignError as exc:
        raise fail(str(exc)) from None
    if split_settings(other.training) != (fraction, seed):
        err_console.print(f"[yellow]warning:[/] {other_dir.name} was fitted with another holdout split "
                          f"{split_settings(other.training)}; it may have trained on these test concepts")
    try:
        with progress_bars() as update:
            res_b = evaluate_detailed(other, part, FeatureCache(cache), progress=update)
        block = compare_results(result, res_b, (model_dir.name, other_dir.name), n_boot=n_boot)
    except (ModalignError, ValueError, KeyError) as exc:
        raise fail(str(exc)) from None
    block["split_matches"] = split_settings(other.training) == (fraction, seed)
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
    console.print(table)
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
