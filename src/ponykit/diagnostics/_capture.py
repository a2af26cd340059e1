"""Statement capture: one execute listener per attached Database, feeding every open counter.

:func:`install` adds the listener to a :class:`~ponykit.kit.Kit` (``attach()`` calls it). The listener
runs in whichever thread executed the statement and hands a :class:`Statement` to every open
:class:`QueryCounter`; each counter keeps the statements of the threads it watches. ``count_queries`` and
``assert_max_queries`` are the public faces of this module (re-exported by ``ponykit.diagnostics``).
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pony.orm import Database

from .._kit import Kit
from ..errors import OptionError, QueryCountExceeded

__all__ = [
    "QueryCounter",
    "Statement",
    "Threads",
    "assert_max_queries",
    "check_threads",
    "count_queries",
    "install",
    "require_observed",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Which threads a counter watches: ``"all"`` (every thread, the default) or ``"current"`` (the thread
#: that opened the block).
Threads = Literal["all", "current"]
_THREADS: tuple[str, ...] = ("all", "current")


@dataclass(frozen=True)
class Statement:
    """One SQL statement as the driver received it: text, bound parameters, time, Database and thread."""

    sql: str
    params: Any = field(repr=False)  # may hold sensitive or encrypted values: never in a repr or message
    seconds: float
    db: Database
    error: BaseException | None = None
    thread: str = ""

    def __str__(self) -> str:
        # The count of parameters, not their values: this text goes into QueryCountExceeded messages.
        count = len(self.params) if isinstance(self.params, (dict, list, tuple)) else int(bool(self.params))
        text = f"{self.sql}  -- {count} parameter(s)" if count else self.sql
        return f"{text}  [thread {self.thread}]" if self.thread else text


@dataclass
class QueryCounter:
    """The statements a :func:`count_queries` block has seen so far.

    With ``threads="all"`` (the default) these are the statements any thread finished while the block
    was open; with ``threads="current"`` those of the thread that opened it, and ``other_threads``
    counts the statements other threads finished meanwhile (not in ``statements``).
    """

    db: Database | None = None
    statements: list[Statement] = field(default_factory=list)
    threads: Threads = "all"
    other_threads: int = 0
    _owner: int = field(default_factory=threading.get_ident, init=False, repr=False)

    @property
    def count(self) -> int:
        """How many statements ran."""
        return len(self.statements)

    def reset(self) -> None:
        """Forget the statements counted so far."""
        self.statements.clear()
        self.other_threads = 0

    def report(self) -> str:
        """The statements, numbered, one per line (used in failure messages)."""
        return "\n".join(f"  {i}. {s}" for i, s in enumerate(self.statements, 1))

    def _record(self, statement: Statement, thread_id: int) -> None:
        if self.db is not None and statement.db is not self.db:
            return
        if self.threads == "current" and thread_id != self._owner:
            self.other_threads += 1  # a lost increment under a race only weakens a diagnostic hint
            return
        self.statements.append(statement)  # list.append is atomic: worker threads may record at once


# Every open counter of the process, whatever thread opened it. Replaced, never mutated, under the lock,
# so the listener (called in every thread after every statement) reads it without locking.
_open: tuple[QueryCounter, ...] = ()
_open_lock = threading.Lock()
_listening: weakref.WeakSet[Kit] = weakref.WeakSet()
_listen_lock = threading.Lock()


def _listener(db: Database, sql: str, arguments: Any, seconds: float, error: BaseException | None) -> None:
    counters = _open
    if not counters:
        return
    current = threading.current_thread()
    statement = Statement(sql, arguments, seconds, db, error, current.name)
    for counter in counters:
        counter._record(statement, current.ident or 0)


def install(kit: Kit) -> None:
    """Report the statements of ``kit``'s Database to the open counters (idempotent; attach() calls it)."""
    with _listen_lock:
        if kit in _listening:
            return
        kit.add_execute_listener(_listener)
        _listening.add(kit)


def check_threads(threads: str, function: str) -> None:
    """Refuse a ``threads=`` argument other than ``"all"`` or ``"current"``."""
    if threads not in _THREADS:
        raise OptionError(
            f"{function}(threads=...) expects one of {', '.join(map(repr, _THREADS))}, got {threads!r}: "
            'use "all" (every thread\'s statements, the default) or "current" (this thread\'s only)'
        )


@contextmanager
def count_queries(db: Database | None = None, *, threads: Threads = "all") -> Iterator[QueryCounter]:
    """Count the SQL statements run inside the block (on ``db``, or on every attached Database).

    Yields a :class:`QueryCounter`; ``counter.count`` and ``counter.statements`` (each with ``sql``,
    ``params`` and ``thread``) are live while the block runs. With ``threads="all"`` (the default) a
    statement counts if any thread finished it while the block was open: a request served by a worker
    thread (FastAPI's ``TestClient``, a thread pool) is counted, and so is an unrelated thread that
    happens to run SQL at the same time. ``threads="current"`` counts this thread's statements only.
    Only Databases attached with :func:`ponykit.attach` are observed.
    """
    global _open
    check_threads(threads, "count_queries")
    counter = QueryCounter(db, threads=threads)
    with _open_lock:
        _open = (*_open, counter)
    try:
        yield counter
    finally:
        with _open_lock:
            _open = tuple(c for c in _open if c is not counter)


def require_observed(counter: QueryCounter, function: str) -> None:
    """In per-thread mode, refuse to pass vacuously when the work ran on other threads."""
    if counter.threads == "current" and counter.count == 0 and counter.other_threads:
        raise QueryCountExceeded(
            f'{function}(threads="current") saw no SQL statement on this thread, but other threads '
            f"ran {counter.other_threads} during the block: the code under test runs elsewhere (a test "
            "client's worker thread, a thread pool), so the check would pass without checking anything. "
            'Use threads="all" (the default) to count every thread\'s statements.'
        )


class _MaxQueries:
    """Context manager and decorator behind :func:`assert_max_queries`."""

    def __init__(self, limit: int, db: Database | None, threads: Threads) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise OptionError(
                f"assert_max_queries() needs a limit >= 0 (a whole number of statements), got {limit!r}; "
                "use assert_max_queries(0) to forbid any statement"
            )
        check_threads(threads, "assert_max_queries")
        self.limit = limit
        self.db = db
        self.threads = threads
        self._stack: list[Any] = []

    def __enter__(self) -> QueryCounter:
        manager = count_queries(self.db, threads=self.threads)
        counter = manager.__enter__()
        self._stack.append((manager, counter))
        return counter

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        manager, counter = self._stack.pop()
        manager.__exit__(exc_type, exc, tb)
        if exc_type is not None:
            return
        if counter.count > self.limit:
            raise QueryCountExceeded(
                f"expected at most {self.limit} SQL statement(s), {counter.count} ran:\n{counter.report()}"
            )
        require_observed(counter, "assert_max_queries")

    def __call__(self, func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def assert_max_queries(n: int, *, db: Database | None = None, threads: Threads = "all") -> _MaxQueries:
    """Raise :class:`QueryCountExceeded` if the block or decorated function runs over ``n`` statements.

    Works as ``with assert_max_queries(3): ...`` (yielding the :class:`QueryCounter`) and as a
    decorator ``@assert_max_queries(3)``. The failure message lists every statement with its parameters.
    Statements of every thread count (see :func:`count_queries`); with ``threads="current"`` only this
    thread's, and a block whose statements all ran on other threads raises instead of passing.
    """
    return _MaxQueries(n, db, threads)
