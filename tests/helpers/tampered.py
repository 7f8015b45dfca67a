"""Ways a model folder gets damaged on disk, each with the words its one-line error must contain."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

CASES = ("truncated", "metrics", "utf8", "unknown-head", "absurd-dims", "nan")


def _edit_config(folder: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    change(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))


def tamper(folder: Path, case: str, modality: str) -> str:
    """Damage the model in ``folder`` as ``case`` says (on ``modality``'s head); return what the error names."""
    weights = folder / "heads.safetensors"
    if case == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
        return "heads.safetensors"
    if case == "metrics":
        (folder / "metrics.json").write_text("{not json")
        return "metrics.json: invalid JSON"
    if case == "utf8":
        (folder / "config.json").write_bytes(b'{"format": "\xff\xfe"}')
        return "config.json: not UTF-8"
    if case == "unknown-head":
        _edit_config(folder, lambda c: c["modalities"][modality]["head"].update(name="transformer9000"))
        return f"modalities.{modality}.head: unknown head 'transformer9000'"
    if case == "absurd-dims":
        _edit_config(folder, lambda c: c["modalities"][modality]["head"].update(in_dim=10**7, out_dim=10**6))
        return f"modalities.{modality}.head: its sizes need"
    if case == "nan":
        state = load_file(str(weights))
        key = next(k for k in state if k.startswith(f"{modality}.") and state[k].dtype.kind == "f")
        state[key].reshape(-1)[0] = np.nan
        save_file(state, str(weights))
        return "NaN or infinite weights"
    raise ValueError(f"unknown tamper case {case!r}")
