"""Add a manifest's rows to an index: only items the index does not hold yet are embedded.

Items are identified by content (``modalign.features.item_key``), so the four rows that share the
caption "grinning face" store one text entry, a re-run over the same manifest embeds nothing, and a
run over a grown manifest embeds only the new items (through the feature cache, so an item encoded
before by ``fit`` or ``eval`` costs no encoder pass either).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modalign.data.dataset import PairedDataset, RowError
from modalign.features import FeatureCache, extract, item_key
from modalign.search.catalog import Catalog, Segment
from modalign.search.sources import entry_source

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclass
class IngestReport:
    rows_added: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    entries_added: int = 0
    items_reused: int = 0
    n_encoded: int = 0
    errors: list[RowError] = field(default_factory=list)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _row_meta(dataset: PairedDataset, i: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"group": dataset.groups[i]}
    for key, column in dataset.meta.items():
        if column[i] is not None:
            meta[key] = _jsonable(column[i])
    # round-trip so a re-run compares like with like (tuples → lists ...)
    return json.loads(json.dumps(meta, ensure_ascii=False, default=str))


def _entry_fields(kind: str, item: Any, root: Path, index_folder: Path | None) -> dict[str, Any]:
    if kind == "text":
        return {"text": item, "path": None}
    if isinstance(item, np.ndarray):
        return {"text": None, "path": None}
    # relative to the manifest's folder, so a moved dataset can still be found (sources.py)
    return {"text": None, **entry_source(Path(item), root, index_folder)}


def plan_dataset(
    catalog: Catalog,
    model: Any,
    dataset: PairedDataset,
    cache: FeatureCache | None = None,
    modalities: Sequence[str] | None = None,
    progress: Progress | None = None,
    index_folder: Path | None = None,
) -> tuple[Segment, IngestReport]:
    """The segment that brings ``dataset``'s rows into the index (new entries embedded).

    File paths are stored relative to ``dataset.root``; ``index_folder`` (where the index lives) also
    records that root as seen from the index, for a dataset moved together with its index.
    """
    mods = list(modalities) if modalities else [m for m in model.modalities if m in dataset.columns]
    missing = [m for m in mods if m not in dataset.columns or m not in model.branches]
    if missing or not mods:
        raise ValueError(f"modalities {missing or mods} must be in both the model {model.modalities} "
                         f"and the manifest {dataset.modalities}")
    report = IngestReport()
    row_keys: list[dict[str, str]] = [{} for _ in range(len(dataset))]
    failed: set[tuple[int, str]] = set()
    new_items: dict[str, dict[str, int]] = {m: {} for m in mods}  # key -> first row that has it
    for m in mods:
        column = dataset.columns[m]
        for i, item in enumerate(column):
            if item is None:
                continue
            try:
                key = item_key(item).hex()
            except OSError as exc:
                report.errors.append(RowError(i + 1, dataset.ids[i], m, f"cannot read file: {exc.strerror or exc}"))
                failed.add((i, m))
                continue
            row_keys[i][m] = key
            if (m, key) in catalog.by_key:
                report.items_reused += 1
            else:
                new_items[m].setdefault(key, i)
            if progress is not None and (i + 1) % 500 == 0:
                progress(f"hash {m}", i + 1, len(column))

    entries: list[dict[str, Any]] = []
    vectors: list[np.ndarray] = []
    entry_for: dict[tuple[str, str], str] = {}
    taken: set[str] = set()
    for m in mods:
        todo = list(new_items[m].items())
        if not todo:
            continue
        branch = model.branch(m)
        items = [dataset.columns[m][i] for _, i in todo]
        stage = f"embed {m}"
        done = [0]

        def tick(n: int, stage: str = stage, total: int = len(items), done: list[int] = done) -> None:
            done[0] += n
            if progress is not None:
                progress(stage, min(done[0], total), total)

        res = extract(model.encoder_for(m), items, cache, layers=[branch.layer], progress=tick, on_error="skip")
        report.n_encoded += res.n_encoded
        for j, reason in res.errors:
            i = todo[j][1]
            report.errors.append(RowError(i + 1, dataset.ids[i], m, reason))
        emb = model.embed_features(m, res.features[branch.layer])
        ok_rows = np.flatnonzero(res.ok)
        for e, j in enumerate(ok_rows):
            key, i = todo[j]
            entry_id = catalog.unused_entry_id(f"{dataset.ids[i]}:{m}")
            while entry_id in taken:  # unused in the catalog, but maybe by an entry of this same batch
                entry_id = catalog.unused_entry_id(entry_id + "~")
            taken.add(entry_id)
            entry_for[(m, key)] = entry_id
            entries.append({"id": entry_id, "modality": m, "kind": branch.kind, "key": key,
                            **_entry_fields(branch.kind, items[j], dataset.root, index_folder)})
            vectors.append(emb[e])
        bad = {todo[j][0] for j in np.flatnonzero(~res.ok)}
        for i, keys in enumerate(row_keys):
            if keys.get(m) in bad:
                failed.add((i, m))
    report.entries_added = len(entries)

    rows = []
    for i, keys in enumerate(row_keys):
        items: dict[str, str] = {}
        for m, key in keys.items():
            if (i, m) in failed:
                continue
            pos = catalog.by_key.get((m, key))
            items[m] = entry_for[(m, key)] if pos is None else catalog.entry_ids[pos]
        if not items:
            continue
        row = {"id": dataset.ids[i], "meta": _row_meta(dataset, i), "items": items}
        old = catalog.rows.get(row["id"])
        if old is not None:
            same_items = {m: catalog.entry_ids[p] for m, p in old["items"].items()} == items
            if same_items and old["meta"] == row["meta"]:
                report.rows_unchanged += 1
                continue
            report.rows_updated += 1
        else:
            report.rows_added += 1
        rows.append(row)
    stacked = np.stack(vectors).astype(np.float32) if vectors else None
    log.info("index: %d new rows, %d updated, %d unchanged, %d new entries (%d encoded)", report.rows_added,
             report.rows_updated, report.rows_unchanged, report.entries_added, report.n_encoded)
    return Segment(entries=entries, vectors=stacked, rows=rows), report
