"""AlignedModel: frozen encoder specs + one head per modality → one shared, normalised space.

Saved as ``config.json`` (encoders, layers, head hyper-parameters, training settings),
``heads.safetensors`` (head weights, keys ``<modality>.<param>``) and ``metrics.json``.
Loading never executes code: JSON is validated, tensors come from safetensors only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save

from modalign._io import atomic_write_bytes, finite_json, read_regular, replace_folder
from modalign.align.heads.base import Head
from modalign.align.heads.registry import build_head
from modalign.align.model_card import write_model_card
from modalign.encoders.spec import code_specs
from modalign.errors import ConfigError, StorageError, UntrustedCodeError
from modalign.settings import settings_path, trusted_encoders

FORMAT = "modalign.aligned_model"
FORMAT_VERSION = 1
ALLOWED_FILES = {"config.json", "heads.safetensors", "metrics.json", "errors.jsonl", "README.md"}


@dataclass
class Branch:
    """One modality of the space: which frozen encoder, which layer, which head."""

    modality: str
    kind: str
    encoder: str
    encoder_config: dict[str, Any]
    layer: str
    head: Head
    #: sha256 of the encoder's weight files (None for built-ins, whose pip package pins them)
    encoder_weights: str | None = None

    def to_json(self) -> dict[str, Any]:
        encoder: dict[str, Any] = {"name": self.encoder, "config": self.encoder_config}
        if self.encoder_weights is not None:
            encoder["weights_sha256"] = self.encoder_weights
        return {"kind": self.kind, "encoder": encoder, "layer": self.layer, "head": self.head.config()}


@dataclass
class AlignedModel:
    branches: dict[str, Branch]
    dim: int
    method: str = "infonce"
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    #: rows skipped while fitting (bad items); written to errors.jsonl by the CLI, not saved with the model
    fit_errors: list[Any] = field(default_factory=list, repr=False, compare=False)

    @property
    def modalities(self) -> list[str]:
        return list(self.branches)

    def branch(self, modality: str) -> Branch:
        try:
            return self.branches[modality]
        except KeyError:
            raise KeyError(f"modality {modality!r} is not in this model; it has {self.modalities}") from None

    # ---------------------------------------------------------------- embedding
    def embed_features(self, modality: str, features: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """Frozen features of ``modality`` (N, D) → unit-norm shared embeddings (N, dim)."""
        head = self.branch(modality).head.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(features), batch_size):
                x = torch.as_tensor(np.asarray(features[start : start + batch_size], dtype=np.float32))
                out.append(torch.nn.functional.normalize(head(x), dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def with_runtimes(self, runtimes: Mapping[str, str]) -> AlignedModel:
        """The same space with the encoders of the named modalities run in another runtime (``torch``, ``onnx``,
        ``onnx-int8``); heads and everything else are shared, the encoder is checked when first loaded."""
        for modality in runtimes:
            self.branch(modality)  # an unknown modality: one clear KeyError
        branches = {m: replace(b, encoder_config={**b.encoder_config, "runtime": runtimes[m]}) if m in runtimes else b
                    for m, b in self.branches.items()}
        return replace(self, branches=branches)

    def encoder_for(self, modality: str):
        from modalign.encoders import check_weights, get_encoder

        b = self.branch(modality)
        encoder = get_encoder(b.encoder, **b.encoder_config)
        check_weights(b.encoder, encoder, b.encoder_weights)  # same path, other weights: refuse, never mix
        return encoder

    def encode(
        self,
        modality: str,
        items: Sequence[Any],
        cache: Any | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Raw items (texts, image paths or PIL images, ...) → shared embeddings; raises on a bad item."""
        from modalign.features import extract

        b = self.branch(modality)
        res = extract(self.encoder_for(modality), list(items), cache, layers=[b.layer], progress=progress,
                      on_error="fail")
        return self.embed_features(modality, res.features[b.layer])

    # ---------------------------------------------------------------- persistence
    def config(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "dim": self.dim, "method": self.method,
                "modalities": {m: b.to_json() for m, b in self.branches.items()}, "training": self.training}

    def save(self, directory: str | Path, overwrite: bool = False, extra: dict[str, bytes] | None = None) -> Path:
        """Write the model folder whole (``_io.replace_folder``): a crash leaves the old model or the new one.

        ``extra``: more files of the folder (``errors.jsonl``), written with it. A folder holding files that
        modalign does not write is refused, unless ``overwrite``: then the model's files are replaced one by
        one beside the others (each atomically, the folder as a whole not).
        """
        out = Path(directory)
        extra = dict(extra or {})
        unknown = sorted(set(extra) - ALLOWED_FILES)
        if unknown:
            raise ValueError(f"extra files {unknown}: a model folder holds only {sorted(ALLOWED_FILES)}")
        foreign = foreign_files(out)
        if foreign and not overwrite:
            raise ConfigError(f"{out}: holds files modalign did not write ({', '.join(foreign[:5])}); save the "
                              "model into a new or empty folder, or pass --overwrite (Python: overwrite=True) to "
                              "write its files beside them")

        def build(folder: Path) -> None:
            tensors = {}
            for m, b in self.branches.items():
                for key, value in b.head.state_dict().items():
                    tensors[f"{m}.{key}"] = value.detach().contiguous().clone()
            atomic_write_bytes(folder / "heads.safetensors", save(tensors))
            atomic_write_bytes(folder / "config.json", json.dumps(self.config(), indent=2).encode())
            metrics = finite_json(json.loads(json.dumps(self.metrics, default=_jsonable)))
            atomic_write_bytes(folder / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False).encode())
            write_model_card(self, folder)
            for name, data in extra.items():
                atomic_write_bytes(folder / name, data)

        if foreign:
            out.mkdir(parents=True, exist_ok=True)
            build(out)
        else:
            replace_folder(out, build, ALLOWED_FILES)
        return out

    @classmethod
    def load(cls, directory: str | Path, trust_code: bool = False) -> AlignedModel:
        """Read a model folder (safetensors + JSON). Opening it never runs code the folder names: an encoder
        spec that would import and call code (``py:MODULE:FACTORY``, a plugin) stops the load with one
        line unless ``trust_code`` is set or the user's settings list that spec (``modalign.settings``)."""
        from modalign.align.model_config import parse_model_config

        folder = Path(directory)
        if not (folder / "config.json").is_file():
            raise ConfigError(f"{folder}: not a modalign model (config.json is missing)")
        unexpected = foreign_files(folder)
        suspicious = [n for n in unexpected if n.endswith((".pkl", ".pickle", ".pt", ".pth", ".bin", ".joblib"))]
        if suspicious:
            raise ConfigError(f"{folder}: refusing to load a model folder holding {suspicious}: modalign models "
                              "are safetensors + JSON only and never load pickled files")
        raw = _read_json(folder / "config.json")
        cfg = parse_model_config(raw, folder / "config.json")
        if not trust_code:
            check_no_code(folder / "config.json", {m: spec.encoder.name for m, spec in cfg.modalities.items()})
        weights_path = folder / "heads.safetensors"
        size = weights_path.stat().st_size if weights_path.is_file() else 0
        heads = {m: _planned_head(folder, m, spec.head, size) for m, spec in cfg.modalities.items()}
        try:
            weights = load_file(str(weights_path))
        except Exception as exc:  # SafetensorError, OSError: truncated, missing or not safetensors at all
            raise ConfigError(f"{weights_path}: cannot read the head weights ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'truncated or not safetensors'})") from None
        branches = {}
        for m, spec in cfg.modalities.items():
            head = heads[m]
            state = {k[len(m) + 1 :]: v for k, v in weights.items() if k.startswith(f"{m}.")}
            try:
                head.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise ConfigError(f"{folder}: weights of modality {m!r} do not match its head: {exc}") from None
            bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
            if bad:  # a NaN weight would serve "score": null to every query
                raise ConfigError(f"{weights_path}: modality {m!r} has NaN or infinite weights in {bad[:3]}")
            branches[m] = Branch(m, spec.kind, spec.encoder.name, spec.encoder.config, spec.layer, head.eval(),
                                 encoder_weights=spec.encoder.weights_sha256)
        metrics_path = folder / "metrics.json"
        metrics = _read_json(metrics_path) if metrics_path.exists() else {}
        return cls(branches=branches, dim=cfg.dim, method=cfg.method, training=cfg.training, metrics=metrics)


def foreign_files(folder: Path) -> list[str]:
    """Names in ``folder`` that a model folder does not hold (empty for a missing folder)."""
    return sorted(p.name for p in folder.iterdir() if p.name not in ALLOWED_FILES) if folder.is_dir() else []


def check_no_code(where: Path, encoders: dict[str, str]) -> None:
    """Refuse, in one line, an encoder spec of a saved file that would run code, unless the user's settings
    trust it (``[trust] encoders``)."""
    trusted: set[str] | None = None
    for modality, spec in encoders.items():
        code = code_specs(spec)
        if not code:
            continue
        trusted = trusted_encoders() if trusted is None else trusted
        untrusted = [c for c in code if c not in trusted]
        if untrusted:
            raise UntrustedCodeError(
                f"{where}: the {modality} encoder {untrusted[0]!r} imports and runs code when it loads, and "
                f"modalign does not run code named by a file it opens; if you trust whoever made this folder, "
                f"pass --trust-code (Python: trust_code=True) or list {untrusted[0]!r} under [trust] encoders "
                f"in {settings_path()}")


#: config.json and metrics.json are kilobytes; anything near this is not a model file
MAX_JSON_BYTES = 64 << 20


def _read_json(path: Path) -> Any:
    """A JSON file of a model folder, or one ConfigError naming it (not a regular file, too large, bad
    bytes, bad JSON, a number past Python's limits)."""
    try:
        return json.loads(read_regular(path, MAX_JSON_BYTES).decode("utf-8"))
    except StorageError as exc:
        raise ConfigError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # an integer of thousands of digits, nesting too deep
        raise ConfigError(f"{path}: invalid JSON: {exc}") from None


def _planned_head(folder: Path, modality: str, spec: dict[str, Any], weights_bytes: int) -> Head:
    """The head of ``spec``, after checking on torch's meta device (no memory) that its size is one the
    weights file can hold: absurd dims in a tampered config fail here, not in a terabyte allocation."""
    where = f"{folder / 'config.json'}: modalities.{modality}.head"
    try:
        with torch.device("meta"):
            planned = build_head(spec)
    except KeyError as exc:
        raise ConfigError(f"{where}: {str(exc).strip(chr(39) + chr(34))}") from None
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    need = sum(t.numel() * t.element_size() for t in [*planned.parameters(), *planned.buffers()])
    if need > weights_bytes:
        raise ConfigError(f"{where}: its sizes need {need:,} bytes of weights but "
                          f"{folder / 'heads.safetensors'} holds {weights_bytes:,}")
    return build_head(spec)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def load(directory: str | Path, trust_code: bool = False) -> AlignedModel:
    """``AlignedModel.load``: a model folder; ``trust_code`` lets its encoders run the code they name."""
    return AlignedModel.load(directory, trust_code=trust_code)
