"""The HTTP API and web page over one index (FastAPI).

Items are served by id from the index's own metadata only, so no request can name a file path.
Uploads are identified by their bytes (never by name or declared type), bounded in size, and images
are checked against the decompression-bomb pixel limit before they are decoded. Bad input gets a 4xx
with a JSON ``detail``; slow uploads (408) and slow searches (503) are cut off at a timeout; CORS is
off unless origins are given.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modalign.cancel import Cancelled, Deadline
from modalign.errors import ItemError
from modalign.search import Index, QueryError
from modalign.search.hit import Hit
from modalign.search.query import vector_modality
from modalign.search.routing import ROUTINGS
from modalign.search.sniff import HEAD_BYTES, MIME_TYPES, sniff
from modalign.search.sources import SourceRefused
from modalign.server.docs import add_offline_docs
from modalign.server.payloads import item_url
from modalign.server.queries import Job, SearchRunner
from modalign.server.schemas import SearchRequest, SearchResponse, ServerSettings, error_responses, multipart_schema
from modalign.server.thumbs import ThumbnailCache
from modalign.server.uploads import BodyBudget, declared_length, parse_json, parse_multipart, read_body

log = logging.getLogger(__name__)

PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; "
            "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def _static_dir() -> Path:
    return Path(str(resources.files("modalign.server") / "static"))


class SecurityHeaders:
    """Adds nosniff / no-referrer to every response. A plain ASGI wrapper: Starlette's ``@app.middleware``
    runs each request through an extra task and body stream, which costs the event loop per request."""

    HEADERS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"))

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in self.HEADERS if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _read_all(handle: BinaryIO) -> bytes:
    with handle:
        return handle.read()


def _chunks(handle: BinaryIO, size: int = 1 << 16) -> Iterator[bytes]:
    """The open file in blocks, closed at the end (or when the client goes away)."""
    with handle:
        while block := handle.read(size):
            yield block


def create_app(index: Index | str | Path, settings: ServerSettings | None = None,
               data_root: str | Path | None = None, trust_code: bool = False,
               runtimes: Mapping[str, Mapping[str, str | None]] | None = None) -> FastAPI:
    """The app over ``index``; ``data_root`` (for an index folder) is where a moved dataset now is;
    ``trust_code`` lets the index's model load an encoder that runs code (``AlignedModel.load``);
    ``runtimes``: what ``/health`` reports of the encoders' runtimes (``server/runtimes.py``)."""
    idx = index if isinstance(index, Index) else Index.open(index, data_root=data_root, trust_code=trust_code)
    cfg = settings or ServerSettings()
    thumbs = ThumbnailCache(cfg.thumbnail_px, cfg.thumbnail_cache)
    # docs pages of FastAPI load their assets from a CDN: /docs is served locally below, ReDoc is off
    app = FastAPI(title="modalign search", version="1", description="Any-to-any search over an aligned space.",
                  docs_url=None, redoc_url=None)
    app.state.index = idx
    runner = SearchRunner(idx, cfg.max_batch, cfg.batch_wait_ms / 1000)
    app.state.runner = runner
    budget = BodyBudget(cfg.upload_budget, cfg.budget_wait_s)
    app.state.upload_budget = budget

    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["*"])

    app.add_middleware(SecurityHeaders)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the offending input, which may not be valid JSON (e.g. a float
        # `inf` sent as `Infinity`) and then turns a 422 into a 500: report location and reason only.
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    app.mount("/static", StaticFiles(directory=_static_dir()), name="static")
    add_offline_docs(app)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        html = (_static_dir() / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/health", summary="Index status, modalities and request limits")
    def health() -> dict[str, Any]:
        model = idx.model
        return {
            "status": "ok", "items": len(idx), "dim": idx.dim, "backend": idx.backend,
            "modalities": [{"name": m, "kind": model.branches[m].kind if model is not None else "vector",
                            "count": n} for m, n in idx.counts().items()],
            "query_modalities": {m: b.kind for m, b in model.branches.items()} if model is not None else {},
            "routings": list(ROUTINGS),
            "limits": {"max_upload_bytes": cfg.max_upload_bytes, "max_text_chars": cfg.max_text_chars,
                       "max_k": cfg.max_k},
            "batching": {"max_batch": cfg.max_batch, "wait_ms": cfg.batch_wait_ms, "on": runner.batched},
            "runtimes": dict(runtimes) if runtimes is not None else None,
            "process": {"pid": os.getpid(), "workers": cfg.workers, "shared_vectors": idx.shared_from is not None},
        }

    @app.post("/search", response_model=SearchResponse, summary="Search with text, an image, audio or an item id",
              responses=error_responses(400, 404, 408, 413, 415, 422, 503),
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": SearchRequest.model_json_schema()},
                  "multipart/form-data": {"schema": multipart_schema()}}}})
    async def search(request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/json", "multipart/form-data"):
            raise HTTPException(415, "send application/json or multipart/form-data")
        async with budget.hold(declared_length(request, cfg.max_upload_bytes)):
            return await _search(request, ctype)

    async def _search(request: Request, ctype: str) -> Response:
        try:
            body = await asyncio.wait_for(read_body(request, cfg.max_upload_bytes), cfg.body_timeout_s)
        except TimeoutError:
            raise HTTPException(408, f"the request body did not arrive within {cfg.body_timeout_s:g} s") from None
        data: bytes | None = None
        if ctype == "application/json":
            fields = parse_json(body)
        else:
            fields, data = await parse_multipart(request, body)
        try:
            req = SearchRequest.model_validate(fields)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None
        given = [name for name, v in (("text", req.text), ("file", data), ("id", req.id), ("vector", req.vector))
                 if v is not None]
        if len(given) != 1:
            raise HTTPException(422, "give exactly one of 'text', 'file', 'id' or 'vector'"
                                + (f" (got {', '.join(given)})" if given else ""))
        if req.k > cfg.max_k:
            raise HTTPException(422, f"k must be at most {cfg.max_k}, got {req.k}")
        if req.vector is not None:
            try:
                vec_modality, vec_dim = vector_modality(idx.model, req.query_modality)
            except QueryError as exc:
                raise HTTPException(422, str(exc)) from None
            if len(req.vector) != vec_dim:
                raise HTTPException(422, f"'vector' has {len(req.vector)} values; modality {vec_modality!r} "
                                         f"takes {vec_dim}")
        if req.text is not None and len(req.text) > cfg.max_text_chars:
            raise HTTPException(422, f"text is {len(req.text)} characters; the limit is {cfg.max_text_chars}")
        if data is not None:
            if not data:
                raise HTTPException(422, "the uploaded file is empty")
            if sniff(data[:HEAD_BYTES]) is None:
                raise HTTPException(415, "unsupported file type: upload a PNG, JPEG, GIF, WebP, BMP or TIFF image, "
                                         "or a WAV, OGG, FLAC or MP3 clip")
        job = Job(req, data, Deadline.after(cfg.search_timeout_s))
        try:
            # micro-batched with the requests that arrive together, or alone (see queries.py)
            return await asyncio.wait_for(runner.run(job), cfg.search_timeout_s)
        except (TimeoutError, Cancelled):
            job.deadline.cancel()  # the worker thread stops at its next check instead of finishing for nobody
            raise HTTPException(503, f"the search took longer than {cfg.search_timeout_s:g} s (the server is busy); "
                                     "try again", headers={"Retry-After": "5"}) from None
        except QueryError as exc:
            raise HTTPException(400, str(exc)) from None
        except ItemError as exc:
            raise HTTPException(400, f"cannot use the uploaded file: {exc.reason}") from None

    def lookup(item_id: str) -> Hit:
        try:
            return idx.item(item_id)
        except KeyError:
            raise HTTPException(404, f"no item {item_id!r} in the index") from None

    def source_file(hit: Hit) -> BinaryIO:
        """The item's file, opened now and checked on the handle (``Index.open_source``): never a file that
        a link swapped in since indexing points to outside the data folder, nor a FIFO or a device."""
        try:
            return idx.open_source(hit.id)
        except SourceRefused as exc:
            log.warning("item %r: refused to serve %s: %s", hit.id, hit.path, exc)
            raise HTTPException(403, f"the source file of item {hit.id!r} is not served: {exc}") from None
        except OSError:
            # the client sees the path inside the dataset only; the log has where the server looked
            log.warning("item %r: source file not found at %s", hit.id, hit.path)
            if hit.source is not None and not Path(hit.source).is_absolute():
                where = f"{hit.source} is not in the data folder (serve with --data-root DIR if the dataset moved)"
            else:
                where = f"{Path(hit.source or hit.path or '?').name} is not where it was indexed"
            raise HTTPException(404, f"the source file of item {hit.id!r} is missing: {where}") from None

    # registered before /items/{id}: a path parameter would otherwise swallow "/thumbnail"
    @app.get("/items/{item_id:path}/thumbnail", summary="A small WebP/PNG preview of an image item",
             responses={200: {"content": {thumbs.mime: {}}}, **error_responses(403, 404, 422)})
    async def thumbnail(item_id: str) -> Response:
        hit = lookup(item_id)
        if hit.kind != "image":
            raise HTTPException(404, f"item {item_id!r} is {hit.kind}: only images have thumbnails")
        try:
            data = await run_in_threadpool(_thumbnail, hit)
        except ItemError as exc:
            raise HTTPException(422, f"item {item_id!r} cannot be shown: {exc.reason}") from None
        return Response(data, media_type=thumbs.mime, headers={"Cache-Control": "public, max-age=3600"})

    def _thumbnail(hit: Hit) -> bytes:
        return thumbs.get(hit.id, lambda: _read_all(source_file(hit)))

    @app.get("/items/{item_id:path}", summary="The item: image/audio bytes, or JSON for text and vectors",
             responses={200: {"content": {t: {} for t in ("application/json", *MIME_TYPES,
                                                           "application/octet-stream")}},
                        **error_responses(403, 404, 422)})
    def item(item_id: str) -> Response:
        hit = lookup(item_id)
        if hit.kind in ("image", "audio"):
            handle = source_file(hit)
            head = handle.read(HEAD_BYTES)
            handle.seek(0)
            found = sniff(head)
            media = found[1] if found is not None and found[0] == hit.kind else "application/octet-stream"
            size = os.fstat(handle.fileno()).st_size
            return StreamingResponse(_chunks(handle), media_type=media,
                                     headers={"Cache-Control": "public, max-age=3600", "Content-Length": str(size)})
        payload = hit.to_json()
        payload.pop("score"), payload.pop("cosine")
        return JSONResponse({**payload, "url": item_url(hit.id)})

    return app
