"""pydantic schema of a model's config.json: bad values fail with the field that is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modalign.errors import ConfigError


class EncoderSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    config: dict[str, Any] = {}
    #: sha256 of the encoder's weight files when it has some (path specs, plugins): checked on recreation
    weights_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class BranchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(pattern=r"^(text|image|audio|vector)$")
    encoder: EncoderSpec
    layer: str = Field(min_length=1)
    head: dict[str, Any]


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str = Field(pattern=r"^modalign\.aligned_model$")
    format_version: int = Field(ge=1, le=1)
    dim: int = Field(gt=0, le=65536)
    method: str
    modalities: dict[str, BranchSpec] = Field(min_length=1)
    training: dict[str, Any] = {}


def parse_model_config(raw: Any, path: Path) -> ModelConfig:
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10])
        raise ConfigError(f"{path}: invalid model config: {problems}") from None
