"""``modalign fit``: align modalities of a manifest and save the model."""

from __future__ import annotations

from pathlib import Path

import typer

from modalign.cli._common import holdout_part, load_dataset, parse_list, parse_mapping
from modalign.cli._ui import console, fail, progress_bars, report_skipped, write_errors
from modalign.errors import ModalignError


def fit_command(
    data: Path = typer.Option(..., "--data", help="manifest (JSONL, CSV or Parquet)", exists=True, dir_okay=False),
    modalities: str = typer.Option(..., "--modalities", help="comma-separated modality fields, e.g. image,text"),
    out: Path = typer.Option(..., "--out", help="model directory to write"),
    encoders: str = typer.Option("", "--encoders", help="MODALITY=ENCODER,... (default by kind)"),
    method: str = typer.Option("infonce", "--method", help="alignment method"),
    head: str = typer.Option("linear", "--head", help="head type for trained methods"),
    dim: int = typer.Option(256, "--dim", help="shared embedding dimension"),
    layers: str = typer.Option("last", "--layers", help="last | auto | MODALITY=LAYER,..."),
    structure: float = typer.Option(0.0, "--structure", help="STRUCTURE regularizer weight λ (0 = off)"),
    epochs: int = typer.Option(100, "--epochs"),
    batch_size: int = typer.Option(256, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr"),
    seed: int = typer.Option(0, "--seed"),
    holdout: float = typer.Option(0.0, "--holdout", help="hold out this share of groups (eval uses them)"),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="share of training groups for early stopping"),
    cache: Path | None = typer.Option(None, "--cache", help="feature cache directory"),
    on_error: str = typer.Option("skip", "--on-error", help="skip | fail on a bad row"),
    allow_outside_root: bool = typer.Option(False, "--allow-outside-root"),
) -> None:
    """Fit heads that align MODALITIES of the manifest into one space."""
    from modalign.align import TrainerSettings, fit
    from modalign.features import FeatureCache

    ds = load_dataset(data, on_error, allow_outside_root)
    mods = parse_list(modalities)
    layer_choice: str | dict[str, str] = layers if layers in ("last", "auto") else parse_mapping(layers, "--layers")
    train = holdout_part(ds, holdout, seed, "train")
    options = {"structure": structure} if structure else {}
    out.mkdir(parents=True, exist_ok=True)
    try:
        with progress_bars() as update:
            model = fit(
                train, mods, encoders=parse_mapping(encoders, "--encoders"), method=method, head=head, dim=dim,
                layers=layer_choice, cache=FeatureCache(cache), val_fraction=val_fraction,
                settings=TrainerSettings(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed),
                options=options, on_error=on_error, progress=update,  # type: ignore[arg-type]
            )
    except (ModalignError, ValueError, KeyError) as exc:
        raise fail(str(exc).strip("'\"")) from None
    model.training["holdout"] = {"fraction": holdout, "seed": seed}
    model.training["manifest"] = str(data.resolve())
    model.save(out)
    errors_path = out / "errors.jsonl"
    write_errors(errors_path, model.fit_errors)
    report_skipped(model.fit_errors, errors_path)
    fit_info = model.metrics.get("fit", {})
    val = fit_info.get("val_R@1")
    console.print(f"[green]saved[/] {out}  method={method} dim={model.dim} layers={model.metrics['layers']['chosen']}"
                  + (f" val R@1={val:.3f}" if isinstance(val, float) else ""))
