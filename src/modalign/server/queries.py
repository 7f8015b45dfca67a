"""Running the searches of the HTTP API off the event loop: micro-batched, or one request at a time.

Text and image queries go to one micro-batcher per query modality: the batch is encoded in one encoder
call and searched in one ``rank`` call per set of search options, on that encoder's own worker thread
(torch releases the GIL, so the event loop keeps reading requests meanwhile). Item-id and feature-vector
queries need no encoder; they are batched on a thread of their own. Audio clips (a temp file each) and
``max_batch=1`` take the per-request path, which is the server as it was before batching.

A request fails alone: its own bad image, empty text or unknown target gives its own exception, and the
others of the batch still get their results (a failed batch call is retried item by item). A batch's work
stops at a deadline check only when every request in it has given up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import HTTPException
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from modalign.cancel import Cancelled, Deadline, check_deadline, deadline_scope
from modalign.search import Index, QueryError
from modalign.search.confidence import confidence_floors
from modalign.search.query import branch_of_kind, embed_vector, encode_batch
from modalign.search.routing import Ranked
from modalign.search.sniff import HEAD_BYTES, sniff
from modalign.server.batcher import MicroBatcher
from modalign.server.payloads import ResultPayloads
from modalign.server.schemas import SearchRequest

#: batcher key of the queries that need no encoder (item ids, feature vectors)
NO_ENCODER = ""


@dataclass
class Job:
    """One search request on its way through a batch."""

    req: SearchRequest
    data: bytes | None
    deadline: Deadline
    start: float = field(default_factory=time.perf_counter)
    #: the query's modality once known (text and image queries: before batching)
    modality: str | None = None


@dataclass
class BatchDeadline(Deadline):
    """Passes only when every member's deadline has: one slow request must not stop the others' work."""

    members: tuple[Deadline, ...] = ()

    @property
    def expired(self) -> bool:
        return all(d.expired for d in self.members)


def _query_about(job: Job, modality: str | None) -> dict[str, Any]:
    return {"modality": modality, "routing": job.req.routing, "k": job.req.k,
            "took_ms": (time.perf_counter() - job.start) * 1000}


class SearchRunner:
    def __init__(self, index: Index, max_batch: int = 64, wait_s: float = 0.0,
                 on_batch: Callable[[str, int], None] | None = None) -> None:
        self.index = index
        #: per query modality and target modality: the cosine 95 % of the index's own pairs reach (confidence.py)
        self.floors = confidence_floors(index)
        self.payloads = ResultPayloads(index)
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.on_batch = on_batch
        self._batchers: dict[str, MicroBatcher[Job, bytes]] = {}
        self._executors: dict[int, ThreadPoolExecutor] = {}

    @property
    def batched(self) -> bool:
        return self.max_batch > 1 and self.index.model is not None

    async def run(self, job: Job) -> Response:
        key = self._route(job)
        if key is None:
            body = await run_in_threadpool(self.run_one, job)
        else:
            body = await self._batcher(key).submit(job)
        return Response(body, media_type="application/json")

    def _route(self, job: Job) -> str | None:
        """The batcher a request goes to (None: the per-request path); checks the query modality first."""
        if not self.batched:
            return None
        model, req = self.index.model, job.req
        if req.text is not None:
            # a text stays text: the library would read a str as a file path for image/audio modalities
            job.modality = branch_of_kind(model, "text", req.query_modality)
            if not req.text.strip():
                raise QueryError("the text query is empty")
            return job.modality
        if job.data is not None:
            found = sniff(job.data[:HEAD_BYTES])
            if found is None or found[0] != "image":
                return None  # audio decoders read a temp file per clip: one at a time
            job.modality = branch_of_kind(model, "image", req.query_modality)
            return job.modality
        return NO_ENCODER

    def _batcher(self, key: str) -> MicroBatcher[Job, bytes]:
        batcher = self._batchers.get(key)
        if batcher is None:
            # one thread per encoder instance: two modalities sharing one encoder never call it at once
            owner = id(self.index.model.encoder_for(key)) if key != NO_ENCODER else 0
            executor = self._executors.get(owner)
            if executor is None:
                executor = self._executors[owner] = ThreadPoolExecutor(1, thread_name_prefix=f"modalign-{key}")

            def counted(n: int, key: str = key) -> None:
                if self.on_batch is not None:
                    self.on_batch(key, n)

            batcher = self._batchers[key] = MicroBatcher(lambda jobs, key=key: self.process(key, jobs), executor,
                                                         self.max_batch, self.wait_s, counted)
        return batcher

    # ------------------------------------------------------------------ worker thread
    def body(self, job: Job, modality: str | None, ranked: Ranked) -> bytes:
        """The response body of ``job``, whose query (of ``modality``) ranked ``ranked``."""
        return self.payloads.body(ranked, _query_about(job, modality), self.floors.get(modality or ""))

    def run_one(self, job: Job) -> bytes:
        """The per-request path: encode and search this one query under its own deadline."""
        with deadline_scope(job.deadline):
            idx, req = self.index, job.req
            if req.id is not None:
                modality, vec = self._item_vector(req.id)
            elif job.data is not None:
                modality, vec = idx.embed_query(job.data, req.query_modality)
            elif req.vector is not None:
                modality, vec = embed_vector(idx.model, req.vector, req.query_modality)
            else:
                if idx.model is None:
                    raise QueryError("this index has no model to encode text with")
                modality = branch_of_kind(idx.model, "text", req.query_modality)
                modality, vec = idx.embed_query(req.text, modality)
            check_deadline()  # the encode step may have used up the request's time
            ranked = idx.rank(vec[None], req.k, req.modalities, req.routing, req.adaptive, modality)[0]
            return self.body(job, modality, ranked)

    def _item_vector(self, item_id: str) -> tuple[str, np.ndarray]:
        try:
            return self.index.catalog.modality[self.index.position(item_id)], self.index.vector(item_id)
        except KeyError:
            raise HTTPException(404, f"no item {item_id!r} in the index") from None

    def process(self, key: str, jobs: list[Job]) -> list[bytes | BaseException]:
        """One batch: each job's JSON response body, or the exception it alone failed with."""
        out: list[bytes | BaseException | None] = [None] * len(jobs)
        vecs: list[tuple[str | None, np.ndarray] | None] = [None] * len(jobs)
        scope = BatchDeadline(max(j.deadline.at for j in jobs), members=tuple(j.deadline for j in jobs))
        with deadline_scope(scope):
            todo: list[tuple[int, Any]] = []  # (job, raw item to encode)
            for i, job in enumerate(jobs):
                try:
                    if job.deadline.expired:
                        raise Cancelled("the request gave up before its batch started")
                    found = self._known_vector(job)
                    if found is None:
                        # raw bytes: the encoder decodes each under the pixel budget and resizes it at once, so a
                        # batch never holds its images at full size together
                        todo.append((i, job.req.text if job.req.text is not None else job.data))
                    else:
                        vecs[i] = found
                except Exception as exc:
                    out[i] = exc
            if todo:
                self._encode(key, jobs, todo, vecs, out)
            self._search(jobs, vecs, out)
        return [o if o is not None else RuntimeError("a batched search produced no answer") for o in out]

    def _known_vector(self, job: Job) -> tuple[str | None, np.ndarray] | None:
        """The query's embedding when no encoder is needed (id, vector, a cached text), else None."""
        req = job.req
        if req.id is not None:
            return self._item_vector(req.id)
        if req.vector is not None:
            return embed_vector(self.index.model, req.vector, req.query_modality)
        if req.text is not None:
            return self.index.cached_text(req.text, job.modality)
        return None

    def _encode(self, modality: str, jobs: list[Job], todo: list[tuple[int, Any]],
                vecs: list[tuple[str | None, np.ndarray] | None], out: list[bytes | BaseException | None]) -> None:
        model = self.index.model
        try:
            embedded = [(i, e) for (i, _), e in zip(todo, encode_batch(model, modality, [t[1] for t in todo]),
                                                    strict=True)]
        except Cancelled as exc:  # every request of the batch gave up
            for i, _ in todo:
                out[i] = exc
            return
        except Exception:
            # one bad item fails the encoder call: encode each alone, so only that one fails
            embedded = []
            for i, item in todo:
                try:
                    with deadline_scope(jobs[i].deadline):
                        embedded.append((i, encode_batch(model, modality, [item])[0]))
                except Exception as exc:
                    out[i] = exc
        for i, emb in embedded:
            vecs[i] = (modality, emb)
            if jobs[i].req.text is not None:
                self.index.cache_text(jobs[i].req.text, modality, (modality, emb))

    def _search(self, jobs: list[Job], vecs: list[tuple[str | None, np.ndarray] | None],
                out: list[bytes | BaseException | None]) -> None:
        """One ``search_embeddings`` call per set of search options; a failing group is redone job by job."""
        groups: dict[tuple[Any, ...], list[tuple[int, np.ndarray]]] = {}
        for i, found in enumerate(vecs):
            if found is None or out[i] is not None:
                continue
            if jobs[i].deadline.expired:
                out[i] = Cancelled("the request gave up while its batch was encoded")
                continue
            r = jobs[i].req
            key = (r.k, tuple(r.modalities) if r.modalities is not None else None, r.routing, r.adaptive, found[0])
            groups.setdefault(key, []).append((i, found[1]))
        for (k, targets, routing, adaptive, modality), members in groups.items():
            queries = np.stack([vec for _, vec in members])
            try:
                rankings: list[Ranked | None] = list(self.index.rank(queries, k, targets, routing, adaptive, modality))
            except Exception:
                rankings = []
                for row, (i, _) in enumerate(members):
                    try:
                        rankings.append(self.index.rank(queries[row : row + 1], k, targets, routing, adaptive,
                                                        modality)[0])
                    except Exception as exc:
                        rankings.append(None)
                        out[i] = exc
            for (i, _), ranked in zip(members, rankings, strict=True):
                if out[i] is None and ranked is not None:
                    out[i] = self.body(jobs[i], modality, ranked)
