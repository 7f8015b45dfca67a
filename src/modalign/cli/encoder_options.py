"""``--encoders MODALITY=SPEC`` plus ``--encoder-option MODALITY.KEY=VALUE`` (and ``--runtime MODALITY=RUNTIME``,
short for ``--encoder-option MODALITY.runtime=RUNTIME``) → fit's encoder choices."""

from __future__ import annotations

import json
from typing import Any

from modalign.cli._common import parse_mapping
from modalign.cli._ui import fail
from modalign.encoders.onnx_runtime import RUNTIMES


def encoder_choices(encoders: str, options: list[str] | None, modalities: list[str],
                    default_for: dict[str, str], runtimes: str = "") -> dict[str, Any]:
    """{modality: spec or (spec, {options})}; options of a modality without a spec go to its default
    encoder (``default_for``). Values are JSON when they parse (numbers, true, lists), else strings."""
    specs: dict[str, Any] = dict(parse_mapping(encoders, "--encoders"))
    opts: dict[str, dict[str, Any]] = {}
    for item in options or []:
        key, sep, raw = item.partition("=")
        modality, dot, name = key.strip().partition(".")
        if not sep or not dot or not modality or not name:
            raise fail(f"--encoder-option: expected MODALITY.KEY=VALUE, got {item!r}")
        if modality not in modalities:
            raise fail(f"--encoder-option {item!r}: modality {modality!r} is not one of {modalities}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw.strip()
        opts.setdefault(modality, {})[name] = value
    for modality, runtime in parse_mapping(runtimes, "--runtime").items():
        if modality not in modalities:
            raise fail(f"--runtime {modality}={runtime}: modality {modality!r} is not one of {modalities}")
        if runtime not in RUNTIMES:
            raise fail(f"--runtime {modality}={runtime}: runtime must be one of {', '.join(RUNTIMES)}")
        opts.setdefault(modality, {})["runtime"] = runtime
    for modality, values in opts.items():
        spec = specs.get(modality) or default_for[modality]
        specs[modality] = (spec, values)
    return specs
