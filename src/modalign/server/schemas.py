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
    #: milliseconds a query waits for others to share its batch (less once max_batch are waiting); 0: it goes at
    #: once when its encoder is idle, and the queries that arrive while a batch runs form the next one
    batch_wait_ms: float = 0.0
    #: server processes sharing the port (``serve --workers``); each one runs this app
    workers: int = 1
    #: request bodies held at once, in bytes, by all requests of this process (0: 4 × max_upload_bytes, at
    #: least 64 MiB); past it a request waits up to ``budget_wait_s``, then gets 503 with Retry-After
    upload_budget_bytes: int = 0
    budget_wait_s: float = 2.0

    @property
    def upload_budget(self) -> int:
        return self.upload_budget_bytes or max(4 * self.max_upload_bytes, 64 << 20)


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
    confident: bool | None = Field(None, description="cosine at or above the confidence floor: what 95 % of the "
                                   "index's own paired rows reach at their best (null: no floor for this pair)")


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


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer: one line for a person, or (422 from request validation) one per field."""

    detail: str | list[ValidationIssue]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each error status it may answer, with ``ErrorResponse`` as its body."""
    reasons = {400: "bad request body", 403: "the item's file is not served", 404: "no such item or file",
               408: "the request body arrived too slowly", 413: "request body over the limit",
               415: "unsupported content or file type", 422: "invalid request",
               503: "busy: try again after Retry-After seconds"}
    return {code: {"model": ErrorResponse, "description": reasons[code]} for code in codes}
