"""Option parsing shared by commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modalign.cli._ui import fail
from modalign.data.dataset import PairedDataset
from modalign.errors import ManifestError


def parse_list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def parse_mapping(value: str | None, option: str) -> dict[str, str]:
    """``image=dinov2-s,text=minilm`` → {"image": "dinov2-s", "text": "minilm"}."""
    out: dict[str, str] = {}
    for part in parse_list(value):
        if "=" not in part:
            raise fail(f"{option}: expected MODALITY=VALUE pairs separated by commas, got {part!r}")
        key, val = part.split("=", 1)
        out[key.strip()] = val.strip()
    return out


def load_dataset(path: Path, on_error: str, allow_outside_root: bool = False,
                 group_by: str | None = None) -> PairedDataset:
    if on_error not in ("skip", "fail"):
        raise fail(f"--on-error must be 'skip' or 'fail', got {on_error!r}")
    try:
        return PairedDataset.from_manifest(path, on_error=on_error, allow_outside_root=allow_outside_root,  # type: ignore[arg-type]
                                           group_by=group_by)
    except ManifestError as exc:
        raise fail(str(exc)) from None


def holdout_part(dataset: PairedDataset, fraction: float, seed: int, part: str) -> PairedDataset:
    """The train or test part of the concept-disjoint split (``fraction`` 0 = everything)."""
    train, test = holdout_parts(dataset, fraction, seed)
    return train if part == "train" or test is None else test


def holdout_parts(dataset: PairedDataset, fraction: float, seed: int) -> tuple[PairedDataset, PairedDataset | None]:
    """Both parts of the concept-disjoint split (no test part at ``fraction`` 0); a split that leaves either side
    empty exits 2 with the reason, instead of training on everything or scoring nothing."""
    if not len(dataset):
        raise fail("no usable rows: every row of the manifest was skipped (see the reasons above)")
    if fraction <= 0:
        return dataset, None
    train, test = dataset.split(fraction, seed=seed)
    n_groups = len(set(dataset.groups))
    if not len(test) or not len(train):
        empty = "test" if not len(test) else "training"
        raise fail(f"--holdout {fraction:g} of {n_groups} group(s) leaves the {empty} "
                   "part empty: the rows need more groups (a 'group' column, or --group-by) or another --holdout")
    return train, test


def grouping_note(dataset: PairedDataset) -> str | None:
    """One line when groups were made by merging rows that share a text or file (no group column)."""
    merged = dataset.grouping.get("merged_rows")
    if not merged:
        return None
    return (f"no group column: {merged} row(s) share an identical text or file with an earlier row and joined its "
            f"group ({len(set(dataset.groups))} groups), so no concept lands on both sides of a split; "
            "--group-by FIELD groups by another field")


def split_settings(training: dict[str, Any]) -> tuple[float, int]:
    holdout = training.get("holdout") or {}
    return float(holdout.get("fraction", 0.0)), int(holdout.get("seed", 0))
