"""``modalign index``: embed a manifest into a searchable index folder (incremental), or delete from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from modalign.cli._common import load_dataset, parse_list
from modalign.cli._config import config_option
from modalign.cli._ui import console, emit_json, fail, json_on_stdout, progress_bars, report_skipped, write_errors
from modalign.errors import ModalignError

ANN_CHOICES = ("exact", "hnsw", "ivf", "ivfpq")


def index_command(
    config: Path | None = config_option(),
    out: Path = typer.Option(..., "--out", help="index directory (created, or updated incrementally)"),
    model_dir: Path | None = typer.Option(None, "--model", help="model directory from `modalign fit`"),
    data: Path | None = typer.Option(None, "--data", help="manifest whose rows to add", dir_okay=False),
    ann: str | None = typer.Option(None, "--ann", help="hnsw | ivf | ivfpq (≥ 1M items): approximate search with faiss "
                                   "(new index only; default exact)"),
    rerank: int | None = typer.Option(None, "--rerank", min=0,
                                      help="with --ann ivfpq: re-score N·k PQ candidates exactly from the stored "
                                      "vectors (default 4; 0 or 1: off; new index only)"),
    modalities: str = typer.Option("", "--modalities", help="only these modalities (default: all of the model's)"),
    delete: list[str] = typer.Option([], "--delete", help="row or item id(s) to delete (repeat or comma-separate)"),
    compact: bool = typer.Option(False, "--compact", help="rewrite without deleted items (rebuilds ANN graphs)"),
    cache: Path | None = typer.Option(None, "--cache", help="feature cache directory"),
    on_error: str = typer.Option("skip", "--on-error", help="skip | fail on a bad row"),
    allow_outside_root: bool = typer.Option(False, "--allow-outside-root", help="allow manifest paths outside "
                                            "the manifest's folder"),
    trust_code: bool = typer.Option(False, "--trust-code", help="let a model or index from someone else run "
                                    "the code its encoders name (py:MODULE:FACTORY, plugins); off: refused"),
    store: str | None = typer.Option(None, "--store", help="where the vectors live: local (the index folder, "
                                     "default) | lancedb | milvus (Milvus Lite) | milvus://HOST:PORT (a Milvus "
                                     "server or cluster); new index only"),
    store_uri: str | None = typer.Option(None, "--store-uri", help="lancedb: a folder or URI; milvus: a Milvus "
                                         "Lite path ending in .db (default: inside the index folder)"),
    hubness: str = typer.Option("none", "--hubness", help="none | csls | isoftmax: compute the per-item "
                                "statistics of hubness-aware search (re-run after every change of the index)"),
    hubness_k: str = typer.Option("auto", "--hubness-k", help="with --hubness csls: k, or auto (chosen by MRR on "
                                  "a seeded half of the index's rows that pair two modalities; else 10)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document (counts of what was added, "
                                 "deleted, the index's size) on stdout; everything else goes to stderr"),
    hubness_beta: str = typer.Option("auto", "--hubness-beta", help="with --hubness isoftmax: β, or auto (as "
                                     "--hubness-k; else 30)"),
) -> None:
    """Embed every item of every modality of MANIFEST into OUT; re-runs embed only new items."""
    from modalign.align import load
    from modalign.features import FeatureCache
    from modalign.search import Index
    from modalign.search.hubness import compute_stats

    if ann is not None and ann not in ANN_CHOICES:
        raise fail(f"--ann must be one of {', '.join(ANN_CHOICES)}, got {ann!r}")
    backend_params = _rerank_params(out, ann, rerank)
    store_record = _store_record(store, store_uri, ann)
    to_delete = [i for value in delete for i in parse_list(value)]
    if data is None and not to_delete and not compact:
        raise fail("nothing to do: give --data MANIFEST (with --model), --delete ID or --compact")
    if data is not None and not data.is_file():
        raise fail(f"--data {data}: file not found")
    if data is not None and model_dir is None and not (out / "index.json").is_file():
        raise fail("a new index needs --model MODEL_DIR")
    doc: dict[str, Any] = {"index": str(out)}
    with json_on_stdout(as_json):
        try:
            model = load(model_dir, trust_code=trust_code) if model_dir is not None else None
        except ModalignError as exc:
            raise fail(str(exc)) from None
        ds = load_dataset(data, on_error, allow_outside_root) if data is not None else None
        try:
            with Index.edit(out, model=model, backend=ann, backend_params=backend_params, store=store_record,
                            trust_code=trust_code) as index:
                if ds is not None:
                    with progress_bars() as update:
                        report = index.add_dataset(ds, FeatureCache(cache), parse_list(modalities) or None,
                                                   progress=update)
                    errors = list(ds.errors) + report.errors
                    if errors:
                        write_errors(out / "errors.jsonl", errors)
                        if on_error == "fail":
                            report_skipped(errors, out / "errors.jsonl")
                            raise fail(f"{len(errors)} item(s) could not be indexed (--on-error fail)")
                    report_skipped(errors, out / "errors.jsonl" if errors else None)
                    doc.update(rows_added=report.rows_added, rows_updated=report.rows_updated,
                               rows_unchanged=report.rows_unchanged, items_embedded=report.entries_added,
                               items_encoded=report.n_encoded, items_reused=report.items_reused,
                               skipped=len(errors))
                    console.print(f"rows: {report.rows_added} added, {report.rows_updated} updated, "
                                  f"{report.rows_unchanged} unchanged; items: {report.entries_added} embedded "
                                  f"({report.n_encoded} through the encoders, the rest from the feature cache), "
                                  f"{report.items_reused} already indexed")
                if to_delete:
                    rows, entries, unknown = index.delete(to_delete)
                    doc.update(rows_deleted=len(rows), items_deleted=len(entries), not_found=unknown)
                    console.print(f"deleted {len(rows)} row(s) and {len(entries)} item(s)")
                    if unknown:
                        console.print(f"[yellow]not in the index:[/] {', '.join(unknown[:20])}")
                        if not rows and not entries:
                            raise fail("none of the ids to delete is in the index (give row ids or item ids)")
                if compact:
                    index.compact()
                    console.print("compacted")
                counts = ", ".join(f"{m}: {n}" for m, n in index.counts().items())
                if hubness != "none":
                    stats = compute_stats(index, hubness, _hubness_value(hubness, hubness_k, hubness_beta))
                    stats.save(out)
                    console.print(f"hubness {stats.method} {'k' if stats.method == 'csls' else 'β'}="
                                  f"{stats.value:g} (chosen on {stats.chosen_on})")
        except (ModalignError, ValueError, KeyError) as exc:
            raise fail(str(exc).strip("'\"")) from None
        where = index.backend if index.vstore.kind == "local" else index.vstore.kind
        console.print(f"[green]index[/] {out}  {where}  {len(index)} items ({counts})")
        doc.update(backend=where, items=len(index), counts=index.counts())
        index.close()
    if as_json:
        emit_json(doc)


def _hubness_value(method: str, k: str, beta: str) -> float | str:
    raw = k if method == "csls" else beta
    if raw == "auto":
        return "auto"
    try:
        return float(raw)
    except ValueError:
        raise fail(f"--hubness-{'k' if method == 'csls' else 'beta'}: expected a number or auto, got {raw!r}") from None


def _rerank_params(out: Path, ann: str | None, rerank: int | None) -> dict[str, int]:
    """Backend parameters for a new index; ``--rerank`` is fixed at creation, so a different value is an error."""
    if rerank is None:
        return {}
    from modalign.search.store import IndexStore

    if IndexStore.exists(out):
        try:
            manifest = IndexStore(out).manifest
        except ModalignError as exc:
            raise fail(str(exc)) from None
        if manifest.backend != "ivfpq":
            raise fail(f"--rerank applies to --ann ivfpq indexes; {out} uses {manifest.backend!r}")
        from modalign.search.backends import BACKENDS

        current = BACKENDS.create("ivfpq", dim=manifest.dim, **manifest.backend_params).rerank
        if current != rerank:
            raise fail(f"{out} was built with --rerank {current}; it is set when an index is created "
                       "(index into a new folder to change it)")
    elif ann != "ivfpq":
        raise fail("--rerank needs --ann ivfpq (the other backends score exactly)")
    return {"rerank": rerank}


def _store_record(store: str | None, uri: str | None, ann: str | None) -> dict[str, object] | None:
    """``--store`` / ``--store-uri`` as the record a new index keeps in index.json (None: not given)."""
    from modalign.search.stores import STORE_KINDS, new_store_record

    if store is None:
        if uri is not None:
            raise fail("--store-uri needs --store lancedb or --store milvus")
        return None
    if store.startswith("milvus://"):
        store, uri = "milvus", store
    if store not in STORE_KINDS:
        raise fail(f"--store must be one of {', '.join(STORE_KINDS)} or milvus://HOST:PORT, got {store!r}")
    if store != "local" and ann is not None:
        raise fail(f"--ann chooses the local store's search structure; the {store} store uses its own index")
    if uri is not None and "://" not in uri:
        uri = str(Path(uri).resolve())  # recorded as given from here, not from the index folder
    try:
        return new_store_record(store, uri)
    except ModalignError as exc:
        raise fail(str(exc)) from None
