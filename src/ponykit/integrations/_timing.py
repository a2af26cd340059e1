"""Per-request statements: the ``Server-Timing`` figures, and SQL that runs on the event loop.

One execute listener per attached Database (added once, by ``install(app)``) adds each statement to the
:class:`RequestTiming` the current thread is working for. A request's database work runs in one session
thread (``PonyRoute``), so a thread-local is the request's scope; statements of other threads (another
request, a background job) are never counted.

A statement that runs on the thread of a running event loop while a PonyRoute request is handled (an
``@async_ok`` endpoint or an async dependency querying Pony directly) blocks every other request. It
cannot be refused when the route is registered; the listener logs one warning per endpoint on the logger
``ponykit.integrations`` naming it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pony.orm import Database

from .._kit import Kit, get_kit

__all__ = ["Endpoint", "RequestTiming", "listen", "measuring", "request_endpoint"]

log = logging.getLogger("ponykit.integrations")


class Endpoint:
    """A PonyRoute as the event-loop warning names it (``"GET /items"``); warned about once."""

    __slots__ = ("name", "warned")

    def __init__(self, name: str) -> None:
        self.name = name
        self.warned = False


request_endpoint: contextvars.ContextVar[Endpoint | None] = contextvars.ContextVar(
    "ponykit_web_endpoint", default=None
)
"""The PonyRoute whose request is being handled in this context, for the event-loop warning."""


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


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _listener(db: Database, sql: str, arguments: Any, seconds: float, error: BaseException | None) -> None:
    timing = _current.timing
    if timing is not None:
        timing.add(seconds)
        return
    endpoint = request_endpoint.get()
    if endpoint is not None and not endpoint.warned and _on_event_loop():
        endpoint.warned = True  # once per route: a log line per statement would flood the log
        log.warning(
            "ponykit: %s ran SQL on the event loop thread (%.1f ms): every other request waited for it. "
            "Do its database work with `await ponykit.run_in_session(fn, ...)`, or make it a plain `def` "
            "endpoint of a PonyRoute",
            endpoint.name,
            seconds * 1000,
        )


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
