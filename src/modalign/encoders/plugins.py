"""Third-party encoders: ``py:module:factory`` and entry points in the group ``modalign.encoders``.

A plugin package declares, in its pyproject::

    [project.entry-points."modalign.encoders"]
    my-encoder = "my_package.encoder:MyEncoder"

The target is an ``Encoder`` subclass or any callable returning an ``Encoder``; its keyword
arguments are the encoder's options.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from modalign.encoders.base import Encoder
from modalign.encoders.errors import EncoderLoadError, check_options

GROUP = "modalign.encoders"


def plugin_entry_points() -> dict[str, EntryPoint]:
    """Installed plugins by name (read from package metadata each call: installs are picked up)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_plugin(name: str) -> tuple[Callable[..., Any], str]:
    """(factory, distribution name) of the plugin ``name``."""
    ep = plugin_entry_points().get(name)
    if ep is None:
        raise EncoderLoadError(f"encoder plugin {name!r} is not installed (no entry point {name!r} in group "
                               f"{GROUP!r})")
    try:
        factory = ep.load()
    except Exception as exc:  # a plugin's import error is reported as the plugin's, not ours
        raise EncoderLoadError(f"encoder plugin {name!r} ({ep.value}) failed to import: "
                               f"{type(exc).__name__}: {exc}") from None
    return factory, ep.dist.name if ep.dist is not None else "?"


def load_factory(target: str) -> Callable[..., Any]:
    """``module:attribute`` (attribute may be dotted) → the object."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise EncoderLoadError(f"encoder 'py:{target}': expected py:MODULE:FACTORY")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise EncoderLoadError(f"encoder 'py:{target}': cannot import {module_name!r}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise EncoderLoadError(f"encoder 'py:{target}': {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise EncoderLoadError(f"encoder 'py:{target}': {attr!r} is not callable")
    return obj


def call_factory(spec: str, factory: Callable[..., Any], options: dict[str, Any]) -> Encoder:
    check_options(spec, factory, options)
    encoder = factory(**options)
    if not isinstance(encoder, Encoder):
        raise EncoderLoadError(f"encoder {spec!r}: the factory returned {type(encoder).__name__}, not a "
                               "modalign.Encoder")
    return encoder
