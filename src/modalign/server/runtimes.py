"""The runtime each encoder of a served index runs in (``serve --runtime``).

An index remembers the runtime its items were encoded in: its model's encoder options. Queries may run
in another one. ``onnx`` computes the same features as ``torch`` (cosine ≥ 1 − 1e-6 to torch in
``benchmarks/runtimes.py``) in less CPU time, so ``auto`` serves a torch-built index through it;
``onnx-int8`` is faster still but moves the features (and the answers) a little, so it is only used
when asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modalign.encoders.catalog import runtimes_of
from modalign.errors import ConfigError

AUTO = "auto"
AS_INDEXED = "index"
#: the runtime that gives torch's features at less cost
SAME_FEATURES = "onnx"


def indexed_runtime(branch: Any) -> str | None:
    """The runtime a branch's items were encoded in (None: its encoder has no runtime option)."""
    choices = runtimes_of(branch.encoder)
    return str(branch.encoder_config.get("runtime", choices[0])) if choices else None


def serving_runtimes(model: Any, choice: str | Mapping[str, str]) -> dict[str, str]:
    """The modalities whose queries run in another runtime than the index's items, and that runtime.

    ``choice``: ``auto`` (onnx for every torch-built encoder that has it), ``index`` (as indexed), or a
    mapping modality → runtime, checked against the modality's encoder (``ConfigError`` naming it)."""
    if choice == AS_INDEXED:
        return {}
    if choice == AUTO:
        return {m: SAME_FEATURES for m, b in model.branches.items()
                if indexed_runtime(b) == "torch" and SAME_FEATURES in runtimes_of(b.encoder)}
    if isinstance(choice, str):
        raise ConfigError(f"runtime choice must be {AUTO!r}, {AS_INDEXED!r} or MODALITY=RUNTIME pairs, got {choice!r}")
    out = {}
    for modality, runtime in choice.items():
        if modality not in model.branches:
            raise ConfigError(f"--runtime {modality}={runtime}: the index has no modality {modality!r}; "
                              f"it has {', '.join(model.branches)}")
        encoder = model.branches[modality].encoder
        allowed = runtimes_of(encoder)
        if runtime not in allowed:
            runs = f"runs in {', '.join(allowed)}" if allowed else "has no runtime option"
            raise ConfigError(f"--runtime {modality}={runtime}: encoder {encoder!r} {runs}")
        out[modality] = runtime
    return out


def runtime_report(model: Any, served: Mapping[str, str]) -> dict[str, dict[str, str | None]]:
    """Per modality: the runtime queries run in and the one the index's items were encoded in."""
    report = {}
    for m, b in model.branches.items():
        indexed = indexed_runtime(b)
        report[m] = {"queries": served.get(m, indexed), "items": indexed}
    return report
