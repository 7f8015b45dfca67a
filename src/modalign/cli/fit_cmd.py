"""``modalign fit``: align modalities of a manifest (or add one to an existing space) and save the model."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import typer

from modalign.cli._common import grouping_note, holdout_parts, load_dataset, parse_list, parse_mapping
from modalign.cli._config import config_option
from modalign.cli._params import number
from modalign.cli._ui import (
    console,
    emit_json,
    err_console,
    errors_jsonl,
    fail,
    json_on_stdout,
    progress_bars,
    report_skipped,
)
from modalign.cli.encoder_options import encoder_choices
from modalign.errors import ModalignError


def parse_options(values: list[str] | None, option: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are read as JSON when they parse (numbers, true/false), else strings."""
    out: dict[str, Any] = {}
    for item in values or []:
        if "=" not in item:
            raise fail(f"{option}: expected KEY=VALUE, got {item!r}")
        key, raw = (s.strip() for s in item.split("=", 1))
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def fit_command(
    config: Path | None = config_option(),
    data: Path = typer.Option(..., "--data", help="manifest (JSONL, CSV or Parquet)", exists=True, dir_okay=False,
        rich_help_panel="Basics"),
    out: Path = typer.Option(..., "--out", help="model directory to write (a new, empty or model folder)",
        rich_help_panel="Basics"),
    unpaired: Path | None = typer.Option(None, "--unpaired", help="manifest of items with one modality only (the "
                                         "corpus beyond the pairs); auto then also tries semi-supervised CCA. "
                                         "Items or groups held out by --holdout are dropped from it",
                                         exists=True, dir_okay=False, rich_help_panel="Basics"),
    overwrite: bool = typer.Option(False, "--overwrite", help="write into --out although it holds other files "
                                   "(they are left alone)",
        rich_help_panel="Basics"),
    modalities: str = typer.Option("", "--modalities", help="comma-separated modality fields, e.g. image,text "
                                   "(required, unless --base/--add grow a model)", rich_help_panel="Basics"),
    encoders: str = typer.Option("", "--encoders", help="MODALITY=SPEC,...: a built-in or plugin name, hf:PATH, "
                                 "st:PATH, onnx:PATH or py:MODULE:FACTORY (default by kind)",
        rich_help_panel="Encoders & runtime"),
    encoder_option: list[str] = typer.Option(None, "--encoder-option", help="MODALITY.KEY=VALUE encoder option "
                                             "(repeat), e.g. text.pooling=cls",
        rich_help_panel="Encoders & runtime"),
    runtime: str = typer.Option("", "--runtime", help="MODALITY=RUNTIME,...: torch | onnx | onnx-int8 for the "
                                "built-in effnet-lite0 and minilm (dinov2-s: onnx | onnx-int8); the model records "
                                "it. Default torch (docs/encoders.md, Runtimes)",
        rich_help_panel="Encoders & runtime"),
    method: str | None = typer.Option(
        None, "--method", help="auto (default: group k-fold cross-validation over the candidates, then a refit) "
        "| infonce | siglip | cwcl | gram | symile (trained) | procrustes | cca | ridge | semi-cca (closed form; "
        "semi-cca also learns from --unpaired items). Options "
        "that only a trained method reads (--epochs, --steps, --batch-size, --workers, --grad-chunks, --head, "
        "--structure, --intra, --seeds) make the default infonce; with --base/--add it is infonce too",
        rich_help_panel="Method"),
    seeds: int = typer.Option(1, "--seeds", help="trained methods: train N heads with seeds --seed..--seed+N-1 and "
                              "report the spread (mean ± std) of the validation metrics; the model keeps the first",
        rich_help_panel="Method"),
    ensemble: bool = typer.Option(False, "--ensemble", help="with --seeds N: save the N heads as one ensemble "
                                  "(mean of their L2-normalised outputs)",
        rich_help_panel="Method"),
    candidates: str = typer.Option("", "--candidates", help="with --method auto: methods or candidate names to "
                                   "try, e.g. cca,procrustes (default: all)",
        rich_help_panel="Method"),
    time_budget: float | None = typer.Option(None, "--time-budget", parser=number(0, above=True),
                                             help="with --method auto: seconds of "
                                             "cross-validation after which the remaining trained candidates are "
                                             "skipped (off by default: the choice then depends on the machine)",
        rich_help_panel="Method"),
    cv_folds: int = typer.Option(3, "--cv-folds", help="with --method auto: folds of whole groups",
        rich_help_panel="Method"),
    group_by: str = typer.Option("", "--group-by", help="field whose value names each row's concept (default: "
                                 "'group'; without one, rows sharing an identical text or file are grouped)",
        rich_help_panel="Basics"),
    head: str = typer.Option("linear", "--head", help="head for trained methods: linear | mlp | moe",
        rich_help_panel="Training"),
    head_option: list[str] = typer.Option(None, "--head-option", help="KEY=VALUE head hyper-parameter (repeat)",
        rich_help_panel="Training"),
    dim: int = typer.Option(256, "--dim", help="shared embedding dimension", rich_help_panel="Basics"),
    layers: str = typer.Option("last", "--layers", help="last | auto | MODALITY=LAYER,...; LAYER1+LAYER2: one "
                                "layer per part of an A+B encoder (or several of one encoder), concatenated",
        rich_help_panel="Encoders & runtime"),
    structure: float = typer.Option(0.0, "--structure", parser=number(0),
                                    help="STRUCTURE regularizer weight λ (0 = off)",
        rich_help_panel="Training"),
    structure_levels: int = typer.Option(1, "--structure-levels", help="STRUCTURE levels L",
        rich_help_panel="Training"),
    intra: float = typer.Option(0.0, "--intra", parser=number(0),
                                help="intra-modal neighbourhood term weight (0 = off)",
        rich_help_panel="Training"),
    lock: str = typer.Option("", "--lock", help="modality kept frozen (identity head); the others map into it",
        rich_help_panel="Method"),
    anchor: str = typer.Option("", "--anchor", help="anchor modality of closed-form methods / GRAM",
        rich_help_panel="Method"),
    option: list[str] = typer.Option(None, "--option", help="KEY=VALUE method/loss option, e.g. cwcl_power=4",
        rich_help_panel="Method"),
    base: Path | None = typer.Option(None, "--base", help="existing model: add --add to it, keeping it frozen",
        rich_help_panel="Advanced"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document (the model, what was fitted, the "
                                 "estimate) on stdout; everything else goes to stderr", rich_help_panel="Basics"),
    trust_code: bool = typer.Option(False, "--trust-code", help="let a model or index from someone else run "
                                    "the code its encoders name (py:MODULE:FACTORY, plugins); off: refused",
        rich_help_panel="Advanced"),
    add: str = typer.Option("", "--add", help="with --base: the modality to add", rich_help_panel="Advanced"),
    partners: str = typer.Option("", "--partners", help="with --base: modalities of the space to pair with",
        rich_help_panel="Advanced"),
    epochs: int | None = typer.Option(None, "--epochs", help="train for N epochs (batch 256 unless --batch-size) "
                                      "instead of the step schedule",
        rich_help_panel="Training"),
    steps: int | None = typer.Option(None, "--steps", help="optimizer steps (warm-up + cosine decay to 0, final "
                                     "weights kept); default: chosen from the number of pairs",
        rich_help_panel="Training"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="default: from the step schedule (32..256)",
        rich_help_panel="Training"),
    lr: float = typer.Option(1e-3, "--lr", parser=number(0, above=True), help="learning rate of trained methods",
        rich_help_panel="Training"),
    weight_decay: float = typer.Option(0.01, "--weight-decay", parser=number(0),
                                       help="AdamW weight decay of trained methods",
        rich_help_panel="Training"),
    patience: int | None = typer.Option(None, "--patience", help="stop after N evaluations (epochs, or steps/20) "
                                        "without validation gain and keep the best; default: 10 with --epochs, "
                                        "none with the step schedule (it trains its whole budget)",
        rich_help_panel="Training"),
    seed: int = typer.Option(0, "--seed", help="seed of the split, the CV folds and the initialisation",
        rich_help_panel="Basics"),
    holdout: float | None = typer.Option(
        None, "--holdout", parser=number(0, 1, below=True),
        help="hold out this share of groups (eval uses them); default 0, or the base's",
        rich_help_panel="Basics"),
    val_fraction: float = typer.Option(0.1, "--val-fraction", parser=number(0, 1, below=True),
                                       help="share of training groups held back for "
                                       "validation (early stopping with --epochs or --patience)",
        rich_help_panel="Training"),
    cache: Path | None = typer.Option(None, "--cache", help="feature cache directory (default $MODALIGN_CACHE, else "
                                          "~/.cache/modalign/features)", rich_help_panel="Basics"),
    on_error: str = typer.Option("skip", "--on-error", help="skip | fail on a bad row", rich_help_panel="Basics"),
    allow_outside_root: bool = typer.Option(False, "--allow-outside-root", help="allow manifest paths outside "
                                            "the manifest's folder",
        rich_help_panel="Basics"),
    backend: str = typer.Option("local", "--backend", help="feature extraction: local | ray (Ray Data)",
        rich_help_panel="Scale-out"),
    ray_address: str | None = typer.Option(None, "--ray-address", help="with --backend ray: cluster (e.g. auto)",
        rich_help_panel="Scale-out"),
    ray_workers: int = typer.Option(2, "--ray-workers", help="with --backend ray: encoder actors",
        rich_help_panel="Scale-out"),
    workers: int = typer.Option(1, "--workers", help="train on N DDP processes (gloo on CPU, NCCL on GPUs); "
                                "fixed --epochs, no early stopping",
        rich_help_panel="Scale-out"),
    grad_chunks: int = typer.Option(1, "--grad-chunks", help="GradCache: embed each batch in N chunks "
                                    "(large contrastive batches in less memory, ~1 extra forward)",
        rich_help_panel="Scale-out"),
    device: str = typer.Option("cpu", "--device", help="train the heads on cpu | cuda | cuda:N | auto (cuda when "
                               "available); one process (DDP ranks take one GPU each)",
        rich_help_panel="Encoders & runtime"),
) -> None:
    """Fit heads that align MODALITIES of the manifest into one space (or, with --base/--add, grow one)."""
    from modalign.align import TrainerSettings, fit, load
    from modalign.align.ddp import fill_once, join_launch, launched, leave_launch
    from modalign.align.method_choice import resolve_method, training_arguments
    from modalign.align.seeds import check_seeds
    from modalign.align.trainer import resolve_device
    from modalign.encoders import DEFAULT_ENCODER_FOR_KIND
    from modalign.features import FeatureCache

    if (base is None) != (not add):
        raise fail("--base and --add go together: --base MODEL_DIR --add MODALITY")
    mods = parse_list(modalities)
    if base is None and not mods:
        raise fail("--modalities is required (e.g. --modalities image,text), unless --base/--add grow a model")
    options = parse_options(option, "--option")
    if structure:
        options["structure"] = structure
        options.setdefault("structure_levels", structure_levels)
    if intra:
        options["intra"] = intra
    if anchor:
        if mods and anchor not in mods:
            raise fail(f"--anchor {anchor!r} is not one of --modalities {mods}")
        options["anchor"] = anchor
    given = training_arguments(epochs=epochs, steps=steps, batch_size=batch_size, head=head, structure=structure,
                               intra=intra, workers=workers, grad_chunks=grad_chunks, base=base, seeds=seeds)
    method = resolve_method(method, given, candidates)
    try:
        check_seeds(method, seeds, ensemble)
    except ValueError as exc:
        raise fail(f"--seeds: {exc}") from None
    if base is not None and unpaired is not None:
        raise fail("--unpaired goes with a new fit, not with --base/--add")
    if base is not None and seeds > 1:
        raise fail("--seeds does not grow a model (--base/--add): fit the new modality once")
    if method == "auto":
        if base is not None:
            raise fail("--method auto does not grow a model (--base/--add): give one of infonce, siglip, cwcl, "
                       "procrustes, cca, ridge")
        if time_budget is not None and not time_budget > 0:  # also refuses nan
            raise fail(f"--time-budget must be a positive number of seconds, got {time_budget}")
        options.update(candidates=candidates or "all", cv_folds=cv_folds)
        if time_budget is not None:
            options["time_budget"] = time_budget
    elif candidates:
        raise fail(f"--candidates goes with --method auto, not --method {method}")
    if epochs is not None and steps is not None:
        raise fail("--epochs and --steps are two schedules: give one of them")
    if (epochs is not None and epochs < 1) or (steps is not None and steps < 1) or (batch_size or 2) < 2:
        raise fail("--epochs and --steps must be at least 1, --batch-size at least 2")
    distributed = workers > 1 or bool(os.environ.get("WORLD_SIZE", "").strip() not in ("", "0", "1"))
    # the step schedule is the default; epochs when asked for, and under DDP (it trains fixed epochs)
    schedule: dict[str, Any] = {"epochs": epochs or 100} if epochs is not None or distributed else \
        {"steps": steps or "auto"}
    if batch_size is not None:
        schedule["batch_size"] = batch_size
    elif steps is not None:
        schedule["batch_size"] = 256
    if patience is not None and patience < 1:
        raise fail("--patience must be at least 1")
    settings = TrainerSettings(**schedule, lr=lr, weight_decay=weight_decay, patience=patience or 10,
                               restore_best=patience is not None, seed=seed, grad_chunks=grad_chunks,
                               workers=workers, device=device)
    if workers < 1 or grad_chunks < 1:
        raise fail("--workers and --grad-chunks must be at least 1")
    try:
        resolve_device(device)  # before encoding anything: a missing GPU should not cost the extraction time
    except ValueError as exc:
        raise fail(f"--device: {exc}") from None
    try:
        launch = launched()  # started by torchrun (WORLD_SIZE > 1): this process is one rank
    except ValueError as exc:
        raise fail(str(exc)) from None
    if launch is not None and workers > 1:
        raise fail(f"--workers {workers} under a launcher (torchrun: WORLD_SIZE={launch.world}, RANK={launch.rank}): "
                   "the launcher already started one process per rank; drop --workers")
    main = launch is None or launch.main  # only rank 0 writes the model folder and prints
    ds = load_dataset(data, on_error, allow_outside_root, group_by or None)
    note = grouping_note(ds)
    if note and main:
        err_console.print(f"[yellow]{note}[/]")
    base_model = None
    if base is not None:
        try:
            base_model = load(base, trust_code=trust_code)
        except ModalignError as exc:
            raise fail(str(exc)) from None
    base_holdout = (base_model.training.get("holdout") or {}) if base_model is not None else {}
    fraction = holdout if holdout is not None else float(base_holdout.get("fraction", 0.0))
    train, held_out = holdout_parts(ds, fraction, seed)
    extra = load_dataset(unpaired, on_error, allow_outside_root, group_by or None) if unpaired is not None else None
    wanted = [*mods, add] if add else mods
    enc_map = encoder_choices(encoders, encoder_option, wanted,
                              {m: DEFAULT_ENCODER_FOR_KIND[ds.kind(m)] for m in wanted if m in ds.columns},
                              runtime)
    if main:  # before any work: a folder of someone else's files is refused now, not after the fit
        from modalign.align.model import foreign_files

        foreign = foreign_files(out)
        if out.exists() and not out.is_dir():
            raise fail(f"--out {out}: exists and is not a folder")
        if foreign and not overwrite:
            raise fail(f"--out {out}: holds files modalign did not write ({', '.join(foreign[:5])}); give a new or "
                       "empty folder, or --overwrite to write the model's files beside them")
    try:
        if launch is not None:
            join_launch()
        with progress_bars() if main else contextlib.nullcontext(_no_progress) as update:
            if backend != "local" or launch is not None:
                def prefill() -> None:
                    _prefill(train, mods or [add], enc_map, FeatureCache(cache),
                             backend, ray_address, ray_workers, update)

                # under a launcher rank 0 (then each other node's local rank 0) encodes while the others
                # wait: every rank's fit() then finds the features in the cache
                fill_once(prefill, launch) if launch is not None else prefill()
            if base_model is not None:
                from modalign.align.progressive import add_modality

                layer = layers if layers in ("last", "auto") else parse_mapping(layers, "--layers").get(add, "last")
                model = add_modality(
                    base_model, train, add, encoder=enc_map.get(add), partners=parse_list(partners) or None,
                    method=method, head=head, head_options=parse_options(head_option, "--head-option"),
                    layer=layer, cache=FeatureCache(cache), val_fraction=val_fraction, settings=settings,
                    options=options, on_error=on_error, progress=update,  # type: ignore[arg-type]
                )
            else:
                model = fit(
                    train, mods, encoders=enc_map, method=method, head=head,
                    head_options=parse_options(head_option, "--head-option"), dim=dim, layers=_layers(layers),
                    cache=FeatureCache(cache), val_fraction=val_fraction, settings=settings, options=options,
                    lock=parse_list(lock), on_error=on_error, progress=update,  # type: ignore[arg-type]
                    seeds=seeds, ensemble=ensemble, unpaired=extra, held_out=held_out,
                )
    except (ModalignError, ValueError, KeyError, TypeError) as exc:
        raise fail(str(exc).strip("'\"")) from None
    finally:
        if launch is not None:
            leave_launch()
    if not main:
        return  # this rank trained its share of every batch; rank 0 holds the same weights and saves them
    model.training["holdout"] = {"fraction": fraction, "seed": seed}
    model.training["grouping"] = dict(ds.grouping)
    if base_model is not None:
        model.training["progressive"][-1]["manifest"] = str(data.resolve())
        model.training["progressive"][-1]["base"] = str(base.resolve())  # type: ignore[union-attr]
    else:
        model.training["manifest"] = str(data.resolve())
    if unpaired is not None and "unpaired" in model.training:
        model.training["unpaired"]["manifest"] = str(unpaired.resolve())
        kept, dropped = model.training["unpaired"]["kept"], model.training["unpaired"]["dropped_held_out"]
        err_console.print("unpaired items: " + ", ".join(f"{n} {m}" for m, n in kept.items())
                          + (f"; {dropped} dropped: their item or group is held out" if dropped else ""))
    errors_path = out / "errors.jsonl"
    try:  # a full disk or a read-only --out: one line; the features stay in the cache for the rerun
        model.save(out, overwrite=overwrite,
                   extra={"errors.jsonl": errors_jsonl(model.fit_errors)} if model.fit_errors else None)
    except (ModalignError, OSError) as exc:
        raise fail(str(exc)) from None
    report_skipped(model.fit_errors, errors_path)
    with json_on_stdout(as_json):
        _summary(model, out, method, add)
    if as_json:
        emit_json(fit_document(model, out))


def fit_document(model: Any, out: Path) -> dict[str, Any]:
    """``fit --json``: where the model is, what was fitted, and the estimate to act on."""
    fit_info = model.metrics.get("fit", {})
    auto = fit_info.get("auto") if isinstance(fit_info.get("auto"), dict) else None
    t = model.training
    doc: dict[str, Any] = {
        "model": str(out), "method": model.method, "fitted": auto["picked"] if auto else model.method,
        "dim": model.dim, "dim_requested": t.get("dim_requested", model.dim), "dim_note": t.get("dim_note"),
        "modalities": {m: {"encoder": b.encoder, "layer": b.layer} for m, b in model.branches.items()},
        "rows": t.get("n_rows"), "groups": t.get("n_groups"), "skipped": t.get("n_skipped", 0),
        "val_R@1": fit_info.get("val_R@1")}
    if auto is not None:
        doc["estimate"] = {"cv_R@1": auto["cv_R@1"], "cv_std": auto["cv_std"], "directions": auto["cv_directions"],
                           "chance_R@1": auto["chance_R@1"], "folds": auto["folds"], "runner_up": auto["runner_up"]}
    return doc


def _prefill(ds: Any, mods: list[str], enc_map: dict[str, Any], cache: Any, backend: str, address: str | None,
             workers: int, update: Any) -> None:
    """Encode every modality on the chosen backend into the cache; ``fit`` then reads it from there."""
    from modalign.align.fit import resolve_encoder
    from modalign.features.backends import BACKENDS

    if backend not in BACKENDS:
        raise fail(f"--backend: expected one of {sorted(BACKENDS)}, got {backend!r}")
    runner = BACKENDS[backend](address=address, concurrency=workers) if backend == "ray" else BACKENDS[backend]()
    for m in mods:
        rows = ds.present(m).nonzero()[0]
        name, config = resolve_encoder(ds, m, enc_map.get(m))
        done = [0]

        def tick(n: int, m: str = m, total: int = len(rows), done: list[int] = done) -> None:
            done[0] += n
            update(f"{backend} encode {m}", min(done[0], total), total)

        try:
            runner.fill(name, config, ds.items(m, rows), cache, progress=tick)
        except RuntimeError as exc:
            raise fail(str(exc)) from None


def _no_progress(stage: str, done: int, total: int) -> None:
    """Ranks other than 0 draw no bars (one set of bars per job, not one per process)."""


def _layers(value: str) -> str | dict[str, str]:
    return value if value in ("last", "auto") else parse_mapping(value, "--layers")


def _summary(model: Any, out: Path, method: str, added: str) -> None:
    if added:
        stage = model.metrics["progressive"][added]
        val = stage["fit"].get("val_R@1")
        console.print(f"[green]saved[/] {out}  added {added} (layer {stage['layers']['chosen']}) to "
                      f"{[m for m in model.modalities if m != added]} with {method}"
                      + (f"; val R@1 vs the space={val:.3f}" if isinstance(val, float) else ""))
        return
    fit_info = model.metrics.get("fit", {})
    if isinstance(model.metrics.get("encoders"), dict):
        _encoder_choice(model.metrics["encoders"])
    auto = fit_info.get("auto") if isinstance(fit_info.get("auto"), dict) else None
    if auto is not None:
        _auto_table(auto)
    if isinstance(fit_info.get("seeds"), dict):
        _seeds_table(fit_info["seeds"])
    note = model.training.get("dim_note")
    if note:
        console.print(f"[yellow]dimension {model.dim}[/] instead of --dim {model.training.get('dim_requested')}: "
                      f"{note}")
    val = fit_info.get("val_R@1")
    fitted = f"{method} → {auto['picked']}" if auto is not None else method
    console.print(f"[green]saved[/] {out}  method={fitted} dim={model.dim} layers={model.metrics['layers']['chosen']}"
                  + (f" val R@1={val:.3f}" if isinstance(val, float) and auto is None else ""))
    if auto is not None:
        _auto_headline(auto)


def _encoder_choice(choice: dict[str, Any]) -> None:
    """``--encoders M=auto``: each candidate's CV R@1 on the sample, the winner, and what choosing cost."""
    for m, picked in choice["chosen"].items():
        tried = ", ".join(f"{t['encoder']} {t['cv_r1']:.3f}" if t["cv_r1"] is not None else f"{t['encoder']} failed"
                          for t in choice["trials"] if t["modality"] == m)
        cost = sum(t["encode_seconds"] for t in choice["trials"] if t["modality"] == m)
        full = choice["estimated_encode_seconds"].get(m)
        console.print(f"[bold]{m} encoder[/]: auto picked [green]{picked}[/] (CV R@1 on {choice['sample_rows']} rows "
                      f"of {choice['sample_groups']} groups: {tried}); encoding the sample took {cost:.0f} s"
                      + (f", every row about {full:.0f} s more" if full is not None else ""))


def _auto_headline(auto: dict[str, Any]) -> None:
    """The estimate a user can act on: the chosen candidate's CV R@1 by direction, chance, the runner-up."""
    dirs = ", ".join(f"{d} {v['mean']:.3f} ± {v['std']:.3f}" for d, v in (auto.get("cv_directions") or {}).items())
    console.print(f"[bold]expected held-out R@1[/] (group CV, mean ± std over {auto['folds']} folds): {dirs}; "
                  f"chance {auto['chance_R@1']:.3f}")
    runner = auto.get("runner_up")
    if runner:
        console.print(f"runner-up: {runner['candidate']} {runner['cv_R@1']:.3f} ± {runner['cv_std']:.3f}")
    if auto.get("time_dependent"):
        console.print("[yellow]--time-budget was given: candidates left when it ran out were skipped, so this "
                      "choice depends on the machine's speed[/]")


def _auto_table(auto: dict[str, Any], top: int = 5) -> None:
    """The cross-validation table of ``--method auto``: the best candidates and what was stopped early."""
    from rich.table import Table

    rows = [r for r in auto["table"] if "mean" in r]
    rows.sort(key=lambda r: (-r["mean"], r["std"]))
    table = Table(title=f"auto: {auto['folds']}-fold group cross-validation over {len(auto['table'])} candidates "
                        f"on {auto.get('cv_rows', '?')} training rows ({auto['cv_seconds']:.1f} s)")
    for col in ("candidate", "CV R@1 (mean ± std)", "seconds"):
        table.add_column(col, justify="left" if col == "candidate" else "right", no_wrap=True)
    for r in rows[:top]:
        mark = "[bold green]" if r["candidate"] == auto["picked"] else ""
        table.add_row(f"{mark}{r['candidate']}", f"{r['mean']:.3f} ± {r['std']:.3f}", f"{r['seconds']:.1f}")
    if len(rows) > top:
        table.add_row(f"… {len(rows) - top} more (metrics.json)", "", "")
    console.print(table)
    skipped = [r for r in auto["table"] if "skipped" in r]
    if skipped:
        console.print(f"[yellow]stopped early[/] {', '.join(r['candidate'] for r in skipped)}: {skipped[0]['skipped']}")


def _seeds_table(report: dict[str, Any]) -> None:
    """``--seeds N``: each validation metric's mean ± std over the seeds, and the ensemble's when saved."""
    from rich.table import Table

    ens = report.get("ensemble") or {}
    table = Table(title=f"{report['n']} seeds {report['seeds'][0]}..{report['seeds'][-1]} on the validation "
                        f"split; the model keeps {report['kept']}")
    table.add_column("metric", no_wrap=True)
    table.add_column("mean ± std", justify="right", no_wrap=True)
    table.add_column("per seed", justify="right")
    if ens:
        table.add_column("ensemble", justify="right", no_wrap=True)
    for key, mean in report["mean"].items():
        per = " ".join(f"{r[key]:.3f}" if isinstance(r.get(key), float) else str(r.get(key, ""))
                       for r in report["per_seed"])
        fmt = (lambda v: f"{v:.3f}") if key.startswith("val ") else (lambda v: f"{v:.0f}")
        row = [key, f"{fmt(mean)} ± {fmt(report['std'][key])}", per]
        if ens:
            row.append(fmt(ens[key]) if key in ens else "")
        table.add_row(*row)
    console.print(table)
