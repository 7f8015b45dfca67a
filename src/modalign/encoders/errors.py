"""Errors of encoder specs: each names the spec (and the option or file) that is wrong."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from modalign.errors import ModalignError


class EncoderLoadError(ModalignError):
    """An encoder spec cannot be turned into an encoder: bad spec, missing path/package/plugin, changed weights."""


class EncoderOptionError(EncoderLoadError):
    """An option the encoder does not take (options are never dropped silently)."""


def check_options(spec: str, factory: Callable[..., Any], options: Mapping[str, Any],
                  reserved: tuple[str, ...] = ()) -> None:
    """Raise ``EncoderOptionError`` naming ``spec`` for options ``factory`` does not accept."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return  # a builtin/C callable: let the call itself complain
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [name for name, p in params.items()
                if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
                and name not in ("self", *reserved)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) or "no options"
        raise EncoderOptionError(f"encoder {spec!r}: unknown option(s) {', '.join(unknown)}; it takes: {takes}")
