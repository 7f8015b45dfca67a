"""Deadlines for work that a caller may give up on (a server request past its timeout).

A thread cannot be killed from outside, so long work checks :func:`check_deadline` between steps
(per image, per batch) and stops with :class:`Cancelled` once its deadline has passed or the caller
cancelled it. Outside a :func:`deadline_scope` the check is a no-op, so library users pay nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from modalign.errors import ModalignError


class Cancelled(ModalignError):
    """The work passed its deadline or its caller cancelled it; it stopped between two steps."""


@dataclass
class Deadline:
    """A point in time (``time.monotonic``) plus an explicit cancel flag."""

    at: float
    _event: threading.Event = field(default_factory=threading.Event, repr=False)

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def cancel(self) -> None:
        self._event.set()

    @property
    def expired(self) -> bool:
        return self._event.is_set() or time.monotonic() >= self.at


_CURRENT: ContextVar[Deadline | None] = ContextVar("modalign_deadline", default=None)


@contextmanager
def deadline_scope(deadline: Deadline) -> Iterator[Deadline]:
    """Make ``deadline`` the one :func:`check_deadline` sees in this thread / context."""
    token = _CURRENT.set(deadline)
    try:
        yield deadline
    finally:
        _CURRENT.reset(token)


def check_deadline() -> None:
    """Raise :class:`Cancelled` if the current scope's deadline has passed (no-op outside a scope)."""
    deadline = _CURRENT.get()
    if deadline is not None and deadline.expired:
        raise Cancelled("the work was stopped: its deadline passed or its caller gave up")
