"""``await run_in_session(fn, ...)``: Pony from async code, on a bounded pool of session threads.

Pony is synchronous and keeps its session and its connection per thread. Running a Pony call on the
event loop thread blocks every other request for the duration of the query (Pony's documented
``async def`` + ``with db_session:`` pattern: 20 concurrent 50 ms queries take 20 x 50 ms). This module
runs the call in one ``db_session`` on a worker thread instead, from a pool of at most
:func:`session_threads` threads that exists once per process.

The pool is the connection budget. Pony opens one connection per thread and Database and keeps it open
for the life of the thread, so a fixed set of ``n`` threads never opens more than ``n`` connections to a
Database, however many requests wait. (anyio's shared worker threads, which Starlette and FastAPI use for
sync endpoints, have no such bound: any of up to 40 running threads, and idle ones, may hold a
connection.) The FastAPI integration runs its endpoints on the same pool.

It is threads, not an async driver: a call occupies a thread and a connection until it returns, and a
cancelled ``await`` does not stop the call (it commits or rolls back as if nobody had been waiting).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pony.orm import db_session

from ..errors import OptionError

__all__ = [
    "DEFAULT_SESSION_THREADS",
    "run_in_session",
    "session_executor",
    "session_threads",
    "set_session_threads",
]

T = TypeVar("T")

DEFAULT_SESSION_THREADS = 8
"""The default budget: session threads per process (so at most this many connections per Database).

Override it with :func:`set_session_threads`, ``PONYKIT_SESSION_THREADS`` in the environment, or
``ponykit.integrations.fastapi.install(app, connections=n)``.
"""

_lock = threading.Lock()
_threads: int | None = None
_executor: ThreadPoolExecutor | None = None


def _default_threads() -> int:
    raw = os.environ.get("PONYKIT_SESSION_THREADS")
    if raw is None or raw == "":
        return DEFAULT_SESSION_THREADS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise OptionError(
            f"PONYKIT_SESSION_THREADS must be a whole number >= 1 (the connection budget), got {raw!r}"
        )
    return value


def set_session_threads(n: int) -> None:
    """Set the number of session threads of this process: the connection budget of each Database.

    Calls already running finish on the old pool; new calls go to a pool of ``n`` threads. The old
    pool's threads end once their calls return (and with them the connections Pony kept for them).
    """
    global _threads, _executor
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise OptionError(
            f"set_session_threads() takes a whole number of threads >= 1 (the number of database "
            f"connections a process may open per Database), got {n!r}"
        )
    with _lock:
        old, _executor, _threads = _executor, None, n
    if old is not None:
        old.shutdown(wait=False)


def session_threads() -> int:
    """The number of session threads of this process (see :func:`set_session_threads`)."""
    global _threads
    with _lock:
        if _threads is None:
            _threads = _default_threads()
        return _threads


def session_executor() -> ThreadPoolExecutor:
    """The process's pool of session threads (created on first use, sized by :func:`session_threads`)."""
    global _executor
    threads = session_threads()
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ponykit-session")
        return _executor


def _in_session(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    # The outermost db_session of this worker thread: it commits when fn returns (on_commit callbacks
    # then run here, after the commit) and rolls back when fn raises.
    with db_session:
        return fn(*args, **kwargs)


async def run_in_session(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` in one ``db_session`` on a session thread and return its result.

    ``await pk.run_in_session(place_order, cart_id)`` from an ``async def`` endpoint, an asyncio worker
    or a Starlette/Litestar handler: the event loop stays free while the query runs. The session commits
    when ``fn`` returns (``on_commit`` callbacks run in the worker thread, after the commit) and rolls
    back when it raises; the exception is re-raised here. Context variables of the caller (the security
    principal, replica pinning, request ids) are visible inside ``fn``, as a copy: what ``fn`` sets does
    not come back. At most :func:`session_threads` calls run at once; the others wait in line.

    Return plain data (or objects whose attributes ``fn`` already loaded): the session is over when the
    result arrives, so a lazy attribute or a collection loaded afterwards raises Pony's
    ``DatabaseSessionIsOver``.
    """
    if not callable(fn):
        raise OptionError(
            f"run_in_session() takes a callable, got {type(fn).__name__}; pass the function and its "
            "arguments separately: run_in_session(fn, *args, **kwargs)"
        )
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = functools.partial(context.run, _in_session, fn, args, kwargs)
    return await loop.run_in_executor(session_executor(), call)
