"""Micro-batching: requests that arrive together are processed in one call, on a worker thread.

A request waits at most ``wait_s`` for company (less once ``max_batch`` are waiting). While a batch
runs on the worker thread, new requests queue up and form the next batch, so under load the batch
size follows the arrival rate and an idle server adds at most ``wait_s`` to a request.

``process`` gets the items of one batch and returns one result per item: a value, or the exception
that item failed with, so a bad item fails alone. A request that gave up (timeout, client gone) is
cancelled and dropped from any batch that has not started yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Process = Callable[[list[T]], list[R | BaseException]]


@dataclass
class _Lane(Generic[T, R]):
    """The queue of one event loop (test clients may run each request on a fresh loop)."""

    loop: asyncio.AbstractEventLoop
    pending: deque[tuple[T, asyncio.Future[R], float]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    runner: asyncio.Task[None] | None = None


class MicroBatcher(Generic[T, R]):
    def __init__(self, process: Process[T, R], executor: Executor, max_batch: int = 64, wait_s: float = 0.0,
                 on_batch: Callable[[int], None] | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.process = process
        self.executor = executor
        self.max_batch = max_batch
        self.wait_s = max(0.0, wait_s)
        self.on_batch = on_batch
        self._lane: _Lane[T, R] | None = None

    async def submit(self, item: T) -> R:
        """``item``'s result, or its own exception; cancelling the caller drops the item if not yet started."""
        loop = asyncio.get_running_loop()
        lane = self._lane
        if lane is None or lane.loop is not loop:
            lane = self._lane = _Lane(loop)
        fut: asyncio.Future[R] = loop.create_future()
        lane.pending.append((item, fut, time.monotonic()))
        if lane.runner is None or lane.runner.done():
            lane.runner = loop.create_task(self._drain(lane))
        elif len(lane.pending) >= self.max_batch:
            lane.wake.set()
        return await fut

    async def _drain(self, lane: _Lane[T, R]) -> None:
        while lane.pending:
            # bounded wait: until max_batch are waiting or the oldest waiting item has waited wait_s
            oldest = lane.pending[0][2]
            left = oldest + self.wait_s - time.monotonic()
            if len(lane.pending) < self.max_batch and left > 0:
                lane.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lane.wake.wait(), left)
            batch = []
            while lane.pending and len(batch) < self.max_batch:
                item, fut, _ = lane.pending.popleft()
                if not fut.done():  # cancelled callers are not worked for
                    batch.append((item, fut))
            if not batch:
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch))
            try:
                results = await lane.loop.run_in_executor(self.executor, self.process, [b[0] for b in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} got {len(results)} results")
            except Exception as exc:  # the batch call itself broke: every item gets that error
                results = [exc] * len(batch)
            for (_, fut), res in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)
