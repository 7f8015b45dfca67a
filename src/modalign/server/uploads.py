"""Reading a request body within limits: JSON or multipart, never more than ``max_bytes`` in memory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

MAX_FORM_FIELDS = 32
MAX_FIELD_BYTES = 64 * 1024


class BodyBudget:
    """Bytes of request bodies this process holds at once, shared by every request: concurrent uploads wait
    their turn (up to ``wait_s``, then 503 with Retry-After) instead of growing memory without bound. A
    request holds its share from before its body is read until its answer is sent, since the body (and
    its decode, which has its own pixel budget) lives that long."""

    def __init__(self, capacity: int, wait_s: float) -> None:
        self.capacity = capacity
        self.wait_s = wait_s
        self.in_use = 0
        # a thread lock and polling, not an asyncio.Condition: the app may be driven from more than one
        # event loop (test clients, embedding apps), and asyncio primitives bind to the first one
        self._lock = threading.Lock()

    def _take(self, n_bytes: int) -> bool:
        with self._lock:
            if self.in_use + n_bytes > self.capacity:
                return False
            self.in_use += n_bytes
            return True

    @contextlib.asynccontextmanager
    async def hold(self, n_bytes: int) -> AsyncIterator[None]:
        n_bytes = min(max(n_bytes, 0), self.capacity)  # one request alone always fits
        deadline = time.monotonic() + self.wait_s
        while not self._take(n_bytes):
            if time.monotonic() >= deadline:
                raise HTTPException(503, f"the server holds {self.in_use:,} bytes of uploads, its limit; try again",
                                    headers={"Retry-After": "2"})
            await asyncio.sleep(0.01)
        try:
            yield
        finally:
            with self._lock:
                self.in_use -= n_bytes


def declared_length(request: Request, max_bytes: int) -> int:
    """What a request's body will take: its Content-Length, or the upload limit when it is chunked."""
    declared = request.headers.get("content-length")
    return int(declared) if declared is not None and declared.isdigit() else max_bytes


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, or 413 as soon as it (or its declared length) goes over ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, "invalid Content-Length header")
        if int(declared) > max_bytes:
            raise HTTPException(413, f"request body is {int(declared)} bytes; the limit is {max_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(413, f"request body is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise HTTPException(400, "request body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # an integer of thousands of digits (Python's int string limit)
        raise HTTPException(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise HTTPException(422, "request body must be a JSON object")
    _check_text(payload)
    return payload


def _check_text(payload: dict[str, Any]) -> None:
    """400 for a lone surrogate (``"\\ud800"`` is valid JSON but not text): it would fail later as a 500.

    Re-encoding as UTF-8 checks every key and string at once; json.dumps nests no deeper than loads did.
    """
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise HTTPException(400, "request body holds a lone surrogate (an unpaired \\ud800-\\udfff escape); "
                                 "send valid Unicode text") from None
    except RecursionError:
        raise HTTPException(400, "request body is not valid JSON: nested too deeply") from None


async def parse_multipart(request: Request, body: bytes) -> tuple[dict[str, Any], bytes | None]:
    """Form fields (``modalities`` may repeat or be comma-separated) and the bytes of ``file``."""

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FIELD_BYTES)
    except HTTPException:
        raise
    except Exception as exc:  # malformed multipart: several parser exception types
        raise HTTPException(400, f"malformed multipart body: {exc}") from None
    fields: dict[str, Any] = {}
    data: bytes | None = None
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "file":
                    raise HTTPException(422, f"unexpected file field {key!r} (use 'file')")
                data = await value.read()
            elif key == "modalities":
                fields.setdefault("modalities", []).extend(v.strip() for v in value.split(",") if v.strip())
            elif key in fields:
                raise HTTPException(422, f"field {key!r} is given twice")
            elif value != "":
                fields[key] = value
    finally:
        await form.close()
    return fields, data
