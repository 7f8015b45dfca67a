"""Encoder specs: the strings (and ``(spec, options)`` pairs) that name an encoder everywhere.

========================  ==============================================================
``minilm``, ``dinov2-s``  a built-in encoder (``modalign encoders list``)
``NAME``                  an installed plugin (entry point group ``modalign.encoders``)
``hf:PATH``               a local Hugging Face transformers folder (text or vision)
``st:PATH``               a local sentence-transformers folder
``onnx:PATH``             an ONNX image model file
``py:MODULE:FACTORY``     a callable returning a ``modalign.Encoder``
``A+B``                   several of the above as one (option ``layers``: one per part)
========================  ==============================================================

Paths are made absolute when a model is fitted, so the saved spec recreates the encoder from any
working directory. Options are keyword arguments of the encoder; an unknown one is an error.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modalign.encoders.base import Encoder
from modalign.encoders.combined import CombinedEncoder
from modalign.encoders.errors import EncoderLoadError, EncoderOptionError, check_options
from modalign.encoders.hf import hf_encoder
from modalign.encoders.onnx_file import OnnxImageEncoder
from modalign.encoders.plugins import call_factory, load_factory, load_plugin, plugin_entry_points
from modalign.encoders.registry import ENCODERS
from modalign.encoders.st import SentenceTransformerEncoder
from modalign.encoders.weights import path_stamp

PATH_SCHEMES = ("hf", "st", "onnx")
SCHEMES = (*PATH_SCHEMES, "py", "plugin")

#: what ``fit(encoders=...)`` takes per modality: a spec, a spec with options, or an encoder object
EncoderChoice = str | tuple[str, Mapping[str, Any]] | Encoder

# hand-kept LRU of loaded encoders: keys hold option dicts (unhashable for lru_cache) and loading runs under _GUARD
_LIVE: OrderedDict[tuple[Any, ...], Encoder] = OrderedDict()
_LIVE_MAX = 16
_GUARD = threading.Lock()


def split_spec(spec: str) -> tuple[str | None, str]:
    """``hf:/x`` → ("hf", "/x"); a bare name → (None, name)."""
    if not isinstance(spec, str) or not spec.strip():
        raise EncoderLoadError(f"encoder spec must be a non-empty string, got {spec!r}")
    scheme, sep, target = spec.strip().partition(":")
    if sep and scheme in SCHEMES:
        if not target:
            raise EncoderLoadError(f"encoder {spec!r}: nothing after {scheme}:")
        return scheme, target
    return None, spec.strip()


def combined_parts(spec: str) -> list[str] | None:
    """``effnet-lite0+dinov2-s`` → its parts, when every part is a spec of its own (else None: a path
    may hold a ``+``)."""
    parts = [p.strip() for p in spec.split("+")]
    if len(parts) < 2 or not all(parts):
        return None
    known = set(ENCODERS.names()) | set(plugin_entry_points())
    ok = all(p in known or split_spec(p)[0] is not None for p in parts)
    return parts if ok else None


def code_specs(spec: str) -> list[str]:
    """The parts of ``spec`` that import and call code when the encoder is made: ``py:`` factories and
    plugin entry points. Built-in names and ``hf:``/``st:``/``onnx:`` paths load weights, not code."""
    parts = combined_parts(spec) if "+" in spec else None
    if parts is not None:
        return [c for p in parts for c in code_specs(p)]
    scheme, target = split_spec(spec)
    if scheme in PATH_SCHEMES:
        return []
    if scheme is None and target in ENCODERS.names():
        return []
    return [spec.strip()]


def canonical_spec(spec: str) -> str:
    """The spec to save: path specs with an absolute path; the others unchanged."""
    parts = combined_parts(spec) if "+" in spec else None
    if parts is not None:
        return "+".join(canonical_spec(p) for p in parts)
    scheme, target = split_spec(spec)
    if scheme in PATH_SCHEMES:
        return f"{scheme}:{Path(target).expanduser().resolve()}"
    return spec.strip()


def split_choice(choice: EncoderChoice) -> tuple[str, dict[str, Any]]:
    """(spec, options) of one ``fit(encoders=...)`` entry; an encoder object gives its name and config."""
    if isinstance(choice, Encoder):
        return choice.name, choice.config()
    if isinstance(choice, tuple):
        if len(choice) != 2 or not isinstance(choice[0], str) or not isinstance(choice[1], Mapping):
            raise EncoderLoadError(f"encoder {choice!r}: expected (spec, {{options}})")
        return canonical_spec(choice[0]), dict(choice[1])
    if isinstance(choice, str):
        return canonical_spec(choice), {}
    raise EncoderLoadError(f"encoder must be a spec string, (spec, options) or a modalign.Encoder, got "
                           f"{type(choice).__name__}")


def _stamp(scheme: str | None, target: str, spec: str) -> tuple[Any, ...]:
    if scheme not in PATH_SCHEMES:
        return ()
    try:
        return path_stamp(Path(target).expanduser())
    except FileNotFoundError:
        raise EncoderLoadError(f"encoder {spec!r}: {target} not found") from None


def _create(spec: str, scheme: str | None, target: str, options: dict[str, Any]) -> Encoder:
    path = Path(target).expanduser()
    if scheme == "hf":
        return hf_encoder(str(path), **options)
    if scheme == "st":
        check_options(spec, SentenceTransformerEncoder, options, reserved=("path",))
        return SentenceTransformerEncoder(path, **options)
    if scheme == "onnx":
        check_options(spec, OnnxImageEncoder, options, reserved=("path",))
        return OnnxImageEncoder(path, **options)
    if scheme == "py":
        return call_factory(spec, load_factory(target), options)
    if scheme == "plugin" or target not in ENCODERS:
        if scheme is None and target not in plugin_entry_points():
            known = ", ".join(ENCODERS.names() + sorted(plugin_entry_points()))
            raise EncoderLoadError(f"unknown encoder {target!r}: not a built-in and no installed plugin (entry point "
                                   f"group 'modalign.encoders') has that name; known: {known}; or give hf:PATH, "
                                   "st:PATH, onnx:PATH or py:MODULE:FACTORY")
        return call_factory(spec, load_plugin(target)[0], options)
    factory = ENCODERS.get(target)
    check_options(spec, factory, options)
    return factory(**options)


def get_encoder(spec: str, **options: Any) -> Encoder:
    """A process-wide shared encoder for ``spec`` with ``options``; weights load once.

    A path spec is reloaded when its files change (by mtime and size), so an edited model is never
    served from a stale instance.
    """
    parts = combined_parts(spec) if "+" in spec else None
    if parts is not None:
        extra = sorted(set(options) - {"layers"})
        if extra:
            raise EncoderLoadError(f"encoder {spec!r}: a combined encoder takes only the option 'layers' (one per "
                                   f"part, e.g. head+final), not {extra}; give its parts' defaults, or wrap them "
                                   "with py:")
        return _combined(spec, parts, options.get("layers"))
    scheme, target = split_spec(spec)
    try:
        key = (canonical_spec(spec), json.dumps(options, sort_keys=True, default=repr), _stamp(scheme, target, spec))
    except TypeError as exc:
        raise EncoderLoadError(f"encoder {spec!r}: options must be JSON values: {exc}") from None
    with _GUARD:
        live = _LIVE.get(key)
        if live is not None:
            _LIVE.move_to_end(key)
            return live
        try:
            encoder = _create(spec, scheme, target, dict(options))
        except (OSError, ImportError) as exc:
            raise EncoderLoadError(f"encoder {spec!r}: {type(exc).__name__}: {_first_line(exc)}") from None
        except (EncoderLoadError, EncoderOptionError):
            raise
        except Exception as exc:  # a damaged hf:/st: folder: bad JSON, truncated safetensors, a broken tokenizer
            if scheme not in PATH_SCHEMES:
                raise
            raise EncoderLoadError(f"encoder {spec!r}: cannot load the model folder: {type(exc).__name__}: "
                                   f"{_first_line(exc)}") from None
        _LIVE[key] = encoder
        while len(_LIVE) > _LIVE_MAX:
            _LIVE.popitem(last=False)
        return encoder


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else "no detail"


def _combined(spec: str, parts: list[str], layers: Any = None) -> Encoder:
    key = (canonical_spec(spec), "+", tuple(_stamp(*split_spec(p), p) for p in parts), json.dumps(layers))
    members = [get_encoder(p) for p in parts]  # each part loads (and is shared) once
    with _GUARD:
        live = _LIVE.get(key)
        if live is None or any(a is not b for a, b in zip(live.parts, members, strict=True)):  # type: ignore[attr-defined]
            live = _LIVE[key] = CombinedEncoder(members, layers)
        return live


def layer_choice(spec: str, options: Mapping[str, Any], layer: str) -> tuple[str, dict[str, Any]] | None:
    """``--layers MODALITY=A+B`` as an encoder: (combined spec, options with ``layers``), or None when
    ``layer`` names one layer. Over ``X+Y`` each part takes one of the layers, in order; over a single
    encoder the layers are several of its own (``effnet-lite0`` with ``head+stage7``)."""
    if "+" not in layer:
        return None
    layers = layer.split("+")
    parts = combined_parts(spec) if "+" in spec else None
    if parts is None:
        if options:
            raise EncoderLoadError(f"encoder {spec!r}: several layers ({layer}) of an encoder given options are not "
                                   "supported; wrap it with py: or drop the options")
        parts = [spec] * len(layers)
    elif len(parts) != len(layers):
        raise EncoderLoadError(f"encoder {spec!r} has {len(parts)} parts, but layers {layer!r} name {len(layers)}")
    return "+".join(parts), {**options, "layers": layers}


def check_weights(spec: str, encoder: Encoder, expected: str | None) -> None:
    """Raise when the weights a model was fitted with are not the ones at the spec's path now."""
    if expected is None:
        return
    actual = encoder.weights_sha256
    if actual != expected:
        raise EncoderLoadError(f"encoder {spec!r}: weights changed since the model was fitted (sha256 "
                               f"{(actual or 'none')[:12]} now, {expected[:12]} saved); refit the model")
