"""``modalign audit``: the pairs whose modalities disagree, duplicates and cross-group leaks of a manifest."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from modalign._io import atomic_write_bytes, finite_json
from modalign.cli._common import load_dataset, parse_list
from modalign.cli._config import config_option
from modalign.cli._ui import console, emit_json, err_console, fail, json_on_stdout, progress_bars
from modalign.cli.encoder_options import encoder_choices
from modalign.errors import ModalignError

if TYPE_CHECKING:
    from modalign.data.dataset import PairedDataset
    from modalign.evaluation.audit import AuditResult

#: columns of pairs.csv (pairs.jsonl holds the same fields)
CSV_FIELDS = ["rank", "id", "group", "mismatch", "flagged", "cosine", "rank_ab", "rank_ba", "best_b", "best_b_cosine",
              "best_a", "best_a_cosine"]


def audit_command(
    config: Path | None = config_option(),
    data: Path = typer.Option(..., "--data", help="manifest to audit", exists=True, dir_okay=False),
    modalities: str = typer.Option("", "--modalities", help="the two modality fields to compare, e.g. image,text "
                                   "(default: the manifest's, when it has exactly two)"),
    encoders: str = typer.Option("", "--encoders", help="MODALITY=SPEC,...: as `fit` takes them (default by kind)"),
    encoder_option: list[str] = typer.Option(None, "--encoder-option", help="MODALITY.KEY=VALUE encoder option "
                                             "(repeat)"),
    method: str = typer.Option("auto", "--method", help="the fit of each fold: auto (the default fit) or any "
                               "method `fit --method` takes; a closed form (cca, procrustes) is faster"),
    folds: int = typer.Option(5, "--folds", min=2, max=20, help="group folds: each row is scored by heads fitted "
                              "on the other folds"),
    seed: int = typer.Option(0, "--seed", help="seed of the folds and of the injected swaps"),
    near_duplicate: float = typer.Option(0.97, "--near-duplicate", min=0.5, max=1.0, help="cosine of two items' "
                                         "frozen features from which they count as near duplicates"),
    out: Path | None = typer.Option(None, "--out", help="folder for pairs.csv, pairs.jsonl, audit.json and "
                                    "report.html", file_okay=False),
    json_out: Path | None = typer.Option(None, "--json", help="write the audit JSON here; '-' prints it on stdout "
                                         "(everything else then goes to stderr)"),
    write_clean: Path | None = typer.Option(None, "--write-clean", help="write a JSONL manifest without the flagged "
                                            "rows and repeated pairs, with the groups that share an item merged"),
    cache: Path | None = typer.Option(None, "--cache", help="feature cache directory"),
    on_error: str = typer.Option("skip", "--on-error", help="skip | fail on a bad row"),
    allow_outside_root: bool = typer.Option(False, "--allow-outside-root", help="allow manifest paths outside "
                                            "the manifest's folder"),
    top: int = typer.Option(10, "--top", min=0, help="suspicious pairs shown in the terminal"),
) -> None:
    """Score every pair out of fold and flag the ones whose modalities disagree (a caption on the wrong image, a
    label copied from the next row); list the same pair twice and items shared across groups (split leaks)."""
    to_stdout = json_out is not None and str(json_out) == "-"
    with json_on_stdout(to_stdout):
        from modalign.encoders import DEFAULT_ENCODER_FOR_KIND
        from modalign.evaluation.audit import audit
        from modalign.features import FeatureCache

        ds = load_dataset(data, on_error, allow_outside_root)
        mods = parse_list(modalities) or ds.modalities
        if len(mods) != 2:
            raise fail(f"--modalities: an audit compares two modalities; the manifest has {', '.join(ds.modalities)}"
                       if not modalities else f"--modalities: give exactly two, got {', '.join(mods)}")
        for m in mods:
            if m not in ds.columns:
                raise fail(f"--modalities: {m!r} is not in {data.name}; it has {', '.join(ds.modalities)}")
        enc_map = encoder_choices(encoders, encoder_option, mods, {m: DEFAULT_ENCODER_FOR_KIND[ds.kind(m)]
                                                                   for m in mods})
        try:
            with progress_bars() as update:
                result = audit(ds, mods, encoders=enc_map, cache=FeatureCache(cache), method=method, folds=folds,
                               seed=seed, near_duplicate=near_duplicate, progress=update)
        except (ModalignError, ValueError, KeyError) as exc:
            raise fail(str(exc)) from None
        payload = finite_json(result.to_json())
        payload["manifest"] = str(data)
        _print_summary(result, ds, top)
        try:  # a folder that cannot be written is one line naming it; the audit above is already printed
            _write_outputs(result, ds, payload, out, json_out, to_stdout, write_clean)
        except ModalignError as exc:
            raise fail(str(exc)) from None


def _write_outputs(result: AuditResult, ds: PairedDataset, payload: dict[str, Any], out: Path | None,
                   json_out: Path | None, to_stdout: bool, write_clean: Path | None) -> None:
    from modalign.data.manifest_writer import write_manifest

    if out is not None:
        _write_folder(out, result, ds, payload)
        console.print(f"[green]wrote[/] {out}/pairs.csv, pairs.jsonl, audit.json, report.html")
    if json_out is not None:
        if to_stdout:
            emit_json(payload)
        else:
            atomic_write_bytes(json_out, json.dumps(payload, indent=2, allow_nan=False).encode())
            console.print(f"[green]wrote[/] {json_out}")
    if write_clean is not None:
        rows, groups = result.clean(ds.groups)
        outside = write_manifest(ds, write_clean, rows, groups)
        merged = len(set(ds.groups)) - len({groups[r] for r in range(len(ds))})
        console.print(f"[green]wrote[/] {write_clean}: {len(rows)} of {len(ds)} rows, {merged} group(s) merged"
                      + (" (files outside its folder: read it with --allow-outside-root)" if outside else ""))


def _print_summary(result: AuditResult, ds: PairedDataset, top: int) -> None:
    a, b = result.modalities
    n = len(result.pairs)
    caught = result.to_json()["calibration"]["injected_caught"]
    console.print(f"audited {n} pairs ({a} ↔ {b}) out of {result.folds} group folds with {result.method} heads in "
                  f"{result.seconds:.1f} s")
    console.print(f"estimated mismatched: {result.estimated_mismatched:.1%} of the pairs; flagged "
                  f"{len(result.flagged)} (threshold "
                  f"{'none' if result.threshold is None else f'{result.threshold:.3f}'}, catching {caught:.0%} of "
                  f"{len(result.injected)} injected swaps)")
    if result.too_weak:
        err_console.print(f"[yellow]warning:[/] the heads tell injected swaps from these pairs at AUROC "
                          f"{result.separation:.2f} only: too weak to flag anything. The ranking is still written; "
                          "more rows, other encoders or --method may help")
    if top and n:
        table = Table(title=f"most suspicious pairs (of {n})")
        for col in ("id", "group", "mismatch", f"{a}→{b} rank", f"{b}→{a} rank", f"{a} matched better with"):
            table.add_column(col)
        for p in result.ranked()[:top]:
            better = ds.ids[p.best_b] if p.best_b >= 0 else "-"
            table.add_row(p.id, p.group, f"{p.mismatch:.3f}" + (" ⚑" if p.flagged else ""), str(p.rank_ab),
                          str(p.rank_ba), better)
        console.print(table)
    if result.duplicates:
        pairs = sum(c.kind == "pair" for c in result.duplicates)
        console.print(f"duplicates: {pairs} pair(s) repeated under several ids; {len(result.leaks)} item cluster(s) "
                      "shared by several groups (a split would leak them)")
    if result.unscored:
        err_console.print(f"[yellow]note:[/] {result.unscored} row(s) lack {a} or {b} and were not scored")


def _write_folder(out: Path, result: AuditResult, ds: PairedDataset, payload: dict[str, Any]) -> None:
    from modalign.evaluation.report.audit_report import write_audit_report

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"--out {out}: {exc.strerror or exc}") from None
    pairs = payload["pairs"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for rank, p in enumerate(pairs, 1):
        writer.writerow({"rank": rank, **p})
    atomic_write_bytes(out / "pairs.csv", text.getvalue().encode())
    atomic_write_bytes(out / "pairs.jsonl", "".join(json.dumps(p) + "\n" for p in pairs).encode())
    atomic_write_bytes(out / "audit.json", json.dumps(payload, indent=2, allow_nan=False).encode())
    write_audit_report(out / "report.html", result, ds)
