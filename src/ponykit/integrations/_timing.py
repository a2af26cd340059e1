"""Per-request statement count and database time, for the ``Server-Timing`` response header.

One execute listener per attached Database (added once, by ``install(app, server_timing=True)``) adds
each statement to the :class:`RequestTiming` the current thread is working for. A request's database
work runs in one session thread (``PonyRoute``), so a thread-local is the request's scope; statements
of other threads (another request, a background job) are never counted.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pony.orm import Database

from .._kit import Kit, get_kit

__all__ = ["RequestTiming", "listen", "measuring"]


@dataclass
class RequestTiming:
    """What one request's session thread ran: statements, seconds in the driver, seconds in the endpoint."""

    statements: int = 0
    db_seconds: float = 0.0
    app_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, seconds: float) -> None:
        """Count one statement that took ``seconds``."""
        with self._lock:
            self.statements += 1
            self.db_seconds += seconds

    def header(self) -> str:
        """The ``Server-Timing`` header value (durations in milliseconds)."""
        return (
            f'db;dur={self.db_seconds * 1000:.3f};desc="{self.statements} statements", '
            f"app;dur={self.app_seconds * 1000:.3f}"
        )


class _Current(threading.local):
    timing: RequestTiming | None = None


_current = _Current()
_listening: weakref.WeakSet[Kit] = weakref.WeakSet()
_listen_lock = threading.Lock()


def _listener(db: Database, sql: str, arguments: Any, seconds: float, error: BaseException | None) -> None:
    timing = _current.timing
    if timing is not None:
        timing.add(seconds)


def listen(db: Database) -> None:
    """Feed the statements of ``db`` (attached) to the timings of the threads that run them (idempotent)."""
    kit = get_kit(db)
    with _listen_lock:
        if kit in _listening:
            return
        kit.add_execute_listener(_listener)
        _listening.add(kit)


@contextmanager
def measuring(timing: RequestTiming | None) -> Iterator[None]:
    """Count this thread's statements into ``timing`` inside the block (nothing when it is None)."""
    if timing is None:
        yield
        return
    previous = _current.timing
    _current.timing = timing
    started = time.perf_counter()
    try:
        yield
    finally:
        timing.app_seconds += time.perf_counter() - started
        _current.timing = previous
