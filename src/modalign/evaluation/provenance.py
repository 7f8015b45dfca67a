"""Where an evaluation's numbers come from: the ``provenance`` block of ``eval --json`` and the report.

Enough to rerun it or to tell two result files apart: the model folder, each modality's encoder,
the manifest and its sha256 (same path, edited file = another hash), the modalign version, the UTC
time and the command line.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for the annotation: the CLI imports this module at start-up, without torch
    from modalign.align.model import AlignedModel


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def eval_provenance(model_dir: Path, model: AlignedModel, manifest: Path, command: Sequence[str]) -> dict[str, Any]:
    encoders = {}
    for m, b in model.branches.items():
        encoders[m] = {"kind": b.kind, "encoder": b.encoder, "config": b.encoder_config, "layer": b.layer,
                       "head": b.head.config().get("name"), "weights_sha256": b.encoder_weights}
    return {
        "model": {"path": str(Path(model_dir).resolve()), "method": model.method, "dim": model.dim},
        "encoders": encoders,
        "dataset": {"path": str(Path(manifest).resolve()), "sha256": file_sha256(Path(manifest))},
        "modalign_version": importlib.metadata.version("modalign"),
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": shlex.join(command),
    }
