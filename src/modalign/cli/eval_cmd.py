"""``modalign eval``: retrieval metrics of a model on a manifest."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from modalign.cli._common import holdout_part, load_dataset, split_settings
from modalign.cli._ui import console, fail, metrics_table, progress_bars, report_skipped
from modalign.errors import ModalignError


def eval_command(
    model_dir: Path = typer.Option(..., "--model", help="model directory from `modalign fit`", exists=True),
    data: Path = typer.Option(..., "--data", help="manifest to evaluate on", exists=True, dir_okay=False),
    json_out: Path | None = typer.Option(None, "--json", help="write metrics JSON here"),
    report: Path | None = typer.Option(None, "--report", help="write an HTML report here"),
    split: str = typer.Option("auto", "--split", help="auto | test | train | all (auto: the fit's held-out groups)"),
    cache: Path | None = typer.Option(None, "--cache", help="feature cache directory"),
    on_error: str = typer.Option("skip", "--on-error", help="skip | fail on a bad row"),
    allow_outside_root: bool = typer.Option(False, "--allow-outside-root"),
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
    report_skipped([f"{i} [{m}]: {r}" for i, m, r in result.errors], None)
    console.print(metrics_table(f"{model_dir.name} on {data.name} ({split}, n={payload['n']})",
                                {model.method: payload["directions"]}))
    console.print(f"modality gap: {payload['modality_gap']:.3f}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(payload, indent=2))
        console.print(f"[green]wrote[/] {json_out}")
    if report is not None:
        from modalign.evaluation.report import write_report

        write_report(report, model, part, result, payload)
        console.print(f"[green]wrote[/] {report}")
