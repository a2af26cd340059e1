"""Query diagnostics: count the statements a block runs, cap them, and detect N+1 patterns.

Every statement Pony's provider executes on an attached Database (ORM queries, lazy loads, flushes,
raw ``db.select``/``db.execute``) is reported through :meth:`ponykit.kit.Kit.add_execute_listener`, in
whichever thread ran it. By default the helpers here count the statements **every thread** finishes
while a block is open, so code that runs elsewhere (a web framework's worker thread behind a test
client, a thread pool) is counted too::

    with count_queries() as counter:
        list(select(b for b in Book))
    assert counter.count == 1

    with assert_max_queries(2):
        ...                                   # QueryCountExceeded lists the statements if more run

    with detect_n_plus_one(threshold=5):
        for author in Author.select():
            len(author.books)                 # NPlusOneDetected: prefetch Author.books

``threads="current"`` counts the calling thread's statements only; there, a block that saw none on its
own thread while other threads ran some fails loudly instead of passing vacuously.

More diagnostics (SQL log with timings, slow-query log, EXPLAIN) will live in this module too.
"""

from __future__ import annotations

import functools
import re
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pony.orm import Database

from .. import _pony
from .._kit import Kit
from ..errors import ConfigurationError, PonykitError, QueryCountExceeded

__all__ = [
    "NPlusOneDetected",
    "NPlusOneFinding",
    "QueryCounter",
    "Statement",
    "Threads",
    "assert_max_queries",
    "count_queries",
    "detect_n_plus_one",
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


def _listen(kit: Kit) -> None:
    # One of attach()'s installers (ponykit.kit.INSTALLERS): every attached Database feeds the counters.
    with _listen_lock:
        if kit in _listening:
            return
        kit.add_execute_listener(_listener)
        _listening.add(kit)


def _check_threads(threads: str, function: str) -> None:
    if threads not in _THREADS:
        raise ConfigurationError(
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
    _check_threads(threads, "count_queries")
    counter = QueryCounter(db, threads=threads)
    with _open_lock:
        _open = (*_open, counter)
    try:
        yield counter
    finally:
        with _open_lock:
            _open = tuple(c for c in _open if c is not counter)


def _require_observed(counter: QueryCounter, function: str) -> None:
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
        if limit < 0:
            raise ValueError(f"assert_max_queries() needs a limit >= 0, got {limit}")
        _check_threads(threads, "assert_max_queries")
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
        _require_observed(counter, "assert_max_queries")

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


# ---------------------------------------------------------------------------------------------------------
# N+1 detection


class NPlusOneDetected(PonykitError, AssertionError):
    """One statement shape ran many times with different parameters: a loop is loading rows one by one.

    ``findings`` lists each shape, how often it ran and which relation or attribute to prefetch.
    """

    def __init__(self, message: str, findings: list[NPlusOneFinding]) -> None:
        super().__init__(message)
        self.findings = findings


@dataclass(frozen=True)
class NPlusOneFinding:
    """A statement shape repeated ``count`` times; ``entity``/``attribute`` name what to prefetch."""

    sql: str
    count: int
    entity: str | None
    attribute: str | None

    @property
    def hint(self) -> str:
        """A sentence saying what to prefetch."""
        if self.entity and self.attribute:
            return (
                f"load {self.entity}.{self.attribute} for all objects at once: "
                f'ponykit.query.prefetch(objects, "{self.attribute}") or '
                f"query.prefetch({self.entity}.{self.attribute})"
            )
        return "batch these loads into one query (prefetch the relation, or select with `in`)"

    def __str__(self) -> str:
        return f"{self.count}x {self.sql}\n    -> {self.hint}"


_IN_LIST = re.compile(r"IN\s*\((?:[^()]*)\)", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def statement_shape(sql: str) -> str:
    """The statement with its ``IN (...)`` lists collapsed and whitespace normalized."""
    return _SPACES.sub(" ", _IN_LIST.sub("IN (...)", sql)).strip()


def _params_key(params: Any) -> Any:
    if isinstance(params, dict):
        return tuple(sorted((str(k), repr(v)) for k, v in params.items()))
    if isinstance(params, (list, tuple)):
        return tuple(repr(v) for v in params)
    return repr(params)


@contextmanager
def detect_n_plus_one(
    threshold: int = 5, *, db: Database | None = None, raise_on_exit: bool = True, threads: Threads = "all"
) -> Iterator[list[NPlusOneFinding]]:
    """Flag statement shapes run at least ``threshold`` times with different parameters inside the block.

    Yields a list that is filled with :class:`NPlusOneFinding` when the block ends; with
    ``raise_on_exit`` (the default) a finding raises :class:`NPlusOneDetected` naming the entity and
    attribute to prefetch. Only SELECT statements are considered (repeated INSERTs are a bulk-write
    concern, not N+1). Statements of every thread count (see :func:`count_queries`); with
    ``threads="current"`` only this thread's, and a block whose statements all ran on other threads
    raises :class:`QueryCountExceeded` instead of finding nothing.
    """
    if threshold < 2:
        raise ValueError(f"detect_n_plus_one() needs threshold >= 2, got {threshold}")
    _check_threads(threads, "detect_n_plus_one")
    findings: list[NPlusOneFinding] = []
    with count_queries(db, threads=threads) as counter:
        yield findings
    _require_observed(counter, "detect_n_plus_one")
    groups: dict[tuple[int, str], list[Statement]] = {}
    for statement in counter.statements:
        if not statement.sql.lstrip().upper().startswith("SELECT"):
            continue
        groups.setdefault((id(statement.db), statement_shape(statement.sql)), []).append(statement)
    for (_db_id, shape), statements in groups.items():
        distinct = {_params_key(s.params) for s in statements}
        if len(statements) >= threshold and len(distinct) >= 2:
            entity, attribute = _pony.n_plus_one_culprit(statements[0].db, statements[0].sql)
            findings.append(NPlusOneFinding(shape, len(statements), entity, attribute))
    if findings and raise_on_exit:
        details = "\n".join(f"  - {f}" for f in findings)
        raise NPlusOneDetected(
            f"N+1 query pattern: {len(findings)} statement shape(s) ran at least {threshold} times with "
            f"different parameters:\n{details}",
            findings,
        )
