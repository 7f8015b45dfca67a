"""``modalign probe``: are two encoders (which layers) alignable? Every layer pair, several measures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from modalign._io import finite_json
from modalign.cli._common import holdout_part, load_dataset, parse_list, parse_mapping
from modalign.cli._params import number
from modalign.cli._ui import console, fail, progress_bars, report_skipped
from modalign.errors import ModalignError

if TYPE_CHECKING:
    from modalign.evaluation.probe import ProbeResult


def probe_command(
    data: Path = typer.Option(..., "--data", help="manifest (JSONL, CSV or Parquet)", exists=True, dir_okay=False),
    modalities: str = typer.Option(..., "--modalities", help="comma-separated modality fields, e.g. image,text"),
    encoders: str = typer.Option("", "--encoders", help="MODALITY=ENCODER,... (default by kind)"),
    max_pairs: int = typer.Option(5000, "--max-pairs", min=3, help="score at most this many pairs (as fit does)"),
    metrics: str = typer.Option("mutual_knn,cka,cka_unbiased,rsa,svcca", "--metrics", help="measures to compute"),
    holdout: float = typer.Option(0.0, "--holdout", parser=number(0, 1, below=True),
                                  help="probe the training part of this split (as fit --holdout)"),
    seed: int = typer.Option(0, "--seed", help="seed of the split and of the pair sample (as fit --seed)"),
    report: Path | None = typer.Option(None, "--report", help="write an HTML report with heatmaps here"),
    json_out: Path | None = typer.Option(None, "--json", help="write every score as JSON here"),
    cache: Path | None = typer.Option(None, "--cache", help="feature cache directory"),
    on_error: str = typer.Option("skip", "--on-error", help="skip | fail on a bad row"),
    allow_outside_root: bool = typer.Option(False, "--allow-outside-root", help="allow manifest paths outside "
                                            "the manifest's folder"),
) -> None:
    """Score every layer pair (mutual-kNN, CKA, RSA, SVCCA) and show what `fit --layers auto` would pick."""
    from modalign.evaluation.probe import probe_dataset
    from modalign.features import FeatureCache

    ds = load_dataset(data, on_error, allow_outside_root)
    mods = parse_list(modalities)
    train = holdout_part(ds, holdout, seed, "train")
    try:
        with progress_bars() as update:
            result, errors = probe_dataset(
                train, mods, encoders=parse_mapping(encoders, "--encoders"), cache=FeatureCache(cache),
                metrics=parse_list(metrics), seed=seed, max_pairs=max_pairs, on_error=on_error, progress=update,
            )
    except (ModalignError, ValueError, KeyError) as exc:
        raise fail(str(exc).strip("'\"")) from None
    report_skipped(errors, None)
    payload = result.to_json()
    payload.update({"data": str(data.resolve()), "holdout": {"fraction": holdout, "seed": seed},
                    "max_pairs": max_pairs})
    for key, pair in result.pairs.items():
        console.print(_summary_table(result, key))
        console.print(_matrix_table(result, key, "mutual_knn"))
        console.print(f"[bold]{pair.a} ↔ {pair.b}:[/] {pair.verdict(result.k, result.groups)}")
    rec = ", ".join(f"{m}={layer}" for m, layer in result.recommendation.items())
    console.print(f"[bold]fit --layers auto[/] would align: [cyan]{rec}[/]  (best mutual-kNN, k={result.k})")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(finite_json(payload), indent=2, allow_nan=False))
        console.print(f"[green]wrote[/] {json_out}")
    if report is not None:
        from modalign.evaluation.report import write_probe_report

        write_probe_report(report, result, payload, source=data.name)
        console.print(f"[green]wrote[/] {report}")


def _summary_table(result: ProbeResult, key: str) -> Table:
    pair = result.pairs[key]
    rec, last = result.recommendation, result.default_layers
    table = Table(title=f"{pair.a} ↔ {pair.b}: best layer pair per measure ({pair.n} pairs)")
    for col in ("measure", f"best {pair.a}", f"best {pair.b}", "best", "at fit's choice", "at last layers"):
        table.add_column(col, justify="left" if col == "measure" or col.startswith("best ") else "right")
    for metric in pair.tables:
        la, lb, score = pair.best(metric)
        table.add_row(metric, la, lb, f"{score:.3f}", f"{pair.at(metric, rec[pair.a], rec[pair.b]):.3f}",
                      f"{pair.at(metric, last[pair.a], last[pair.b]):.3f}")
    return table


def _matrix_table(result: ProbeResult, key: str, metric: str) -> Table:
    pair = result.pairs[key]
    t = pair.tables[metric]
    best = pair.best(metric)
    table = Table(title=f"{metric}: rows = {pair.a} layers, columns = {pair.b} layers", show_lines=False)
    table.add_column(pair.a)
    for lb in pair.layers_b:
        table.add_column(lb, justify="right")
    for i, la in enumerate(pair.layers_a):
        cells = []
        for j, lb in enumerate(pair.layers_b):
            cell = f"{t[i, j]:.3f}"
            cells.append(f"[bold reverse]{cell}[/]" if (la, lb) == best[:2] else cell)
        table.add_row(la, *cells)
    return table
