"""Request/response models of the HTTP API (they are also its OpenAPI schema)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class ServerSettings:
    max_upload_bytes: int = 10 * 1024 * 1024
    max_text_chars: int = 1000
    max_k: int = 1000
    thumbnail_px: int = 192
    thumbnail_cache: int = 4096
    #: browser origins allowed to call the API from other sites; empty = CORS off
    cors_origins: tuple[str, ...] = ()
    #: seconds a client may take to send its request body (then 408): a stalled upload holds no slot forever
    body_timeout_s: float = 30.0
    #: seconds one search (encode + search) may take before the client gets a 503 instead of waiting on
    search_timeout_s: float = 30.0
    #: text/image queries encoded together in one micro-batch at most; 1 = one request at a time
    max_batch: int = 64
    #: milliseconds a query waits for others to share its batch (less once max_batch are waiting)
    batch_wait_ms: float = 5.0
    #: server processes sharing the port (``serve --workers``); each one runs this app
    workers: int = 1


class SearchRequest(BaseModel):
    """Exactly one of ``text``, ``id`` (an indexed item: "more like this"), ``vector`` (JSON only) or, in
    multipart form, ``file``."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, description="text query")
    id: str | None = Field(None, description="search with the vector of this indexed item")
    vector: list[float] | None = Field(
        None, max_length=65536, description="a feature vector in the encoder space of `query_modality` (default: "
        "the first vector-kind modality); it goes through that modality's head, so its length must be the "
        "encoder's dimension (422 otherwise)")
    k: int = Field(10, ge=1, description="results wanted (at most the server's max_k, 1000 by default)")
    modalities: list[str] | None = Field(None, description="target modalities (default: all, or per routing)")
    routing: Literal["calibrated", "raw", "route"] = "calibrated"
    adaptive: float | None = Field(None, ge=0, le=1000, description="keep results within δ of the best score")
    query_modality: str | None = Field(None, description="modality of the query, e.g. text_de (default: inferred)")


class SearchResult(BaseModel):
    id: str
    modality: str
    kind: str
    score: float
    cosine: float
    text: str | None
    url: str
    thumbnail: str | None
    rows: list[str]
    n_rows: int
    meta: dict[str, Any]


class SearchResponse(BaseModel):
    results: list[SearchResult]
    query: dict[str, Any]


def multipart_schema() -> dict[str, Any]:
    props: dict[str, Any] = {"file": {"type": "string", "format": "binary",
                                      "description": "image (PNG/JPEG/GIF/WebP/BMP/TIFF) or audio (WAV/OGG/FLAC/MP3)"},
                             "text": {"type": "string"}, "id": {"type": "string"},
                             "k": {"type": "integer", "default": 10},
                             "modalities": {"type": "string", "description": "comma-separated, or repeat the field"},
                             "routing": {"type": "string", "enum": ["calibrated", "raw", "route"]},
                             "adaptive": {"type": "number"}, "query_modality": {"type": "string"}}
    return {"type": "object", "properties": props}
