"""Query diagnostics: count the statements a block runs, cap them, and detect N+1 patterns.

Every statement Pony's provider executes on an attached Database (ORM queries, lazy loads, flushes,
raw ``db.select``/``db.execute``) is reported through :meth:`ponykit.kit.Kit.add_execute_listener`.
The helpers here count the statements run **by the current thread** while a block is open::

    with count_queries() as counter:
        list(select(b for b in Book))
    assert counter.count == 1

    with assert_max_queries(2):
        ...                                   # QueryCountExceeded lists the statements if more run

    with detect_n_plus_one(threshold=5):
        for author in Author.select():
            len(author.books)                 # NPlusOneDetected: prefetch Author.books

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
from typing import Any, TypeVar

from pony.orm import Database

from . import _pony
from .errors import PonykitError, QueryCountExceeded
from .kit import Kit, add_attach_hook, attached_databases, find_kit

__all__ = [
    "NPlusOneDetected",
    "NPlusOneFinding",
    "QueryCounter",
    "Statement",
    "assert_max_queries",
    "count_queries",
    "detect_n_plus_one",
]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Statement:
    """One SQL statement as the driver received it: text, bound parameters, time and Database."""

    sql: str
    params: Any
    seconds: float
    db: Database
    error: BaseException | None = None

    def __str__(self) -> str:
        return f"{self.sql}  -- params: {self.params!r}" if self.params else self.sql


@dataclass
class QueryCounter:
    """The statements run by this thread inside a :func:`count_queries` block (so far)."""

    db: Database | None = None
    statements: list[Statement] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many statements ran."""
        return len(self.statements)

    def reset(self) -> None:
        """Forget the statements counted so far."""
        self.statements.clear()

    def report(self) -> str:
        """The statements, numbered, one per line (used in failure messages)."""
        return "\n".join(f"  {i}. {s}" for i, s in enumerate(self.statements, 1))

    def _record(self, statement: Statement) -> None:
        if self.db is None or statement.db is self.db:
            self.statements.append(statement)


# Per-thread stack of open counters: a statement is recorded by every counter open in its thread.
_local = threading.local()
_listening: weakref.WeakSet[Kit] = weakref.WeakSet()
_listen_lock = threading.Lock()


def _active() -> list[QueryCounter]:
    stack: list[QueryCounter] | None = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def _listener(db: Database, sql: str, arguments: Any, seconds: float, error: BaseException | None) -> None:
    stack = getattr(_local, "stack", None)
    if not stack:
        return
    statement = Statement(sql, arguments, seconds, db, error)
    for counter in stack:
        counter._record(statement)


def _listen(kit: Kit) -> None:
    with _listen_lock:
        if kit in _listening:
            return
        kit.add_execute_listener(_listener)
        _listening.add(kit)


# Databases attached after this module was imported get the listener at attach().
add_attach_hook(_listen)


@contextmanager
def count_queries(db: Database | None = None) -> Iterator[QueryCounter]:
    """Count the SQL statements this thread runs inside the block (on ``db``, or on every attached db).

    Yields a :class:`QueryCounter`; ``counter.count`` and ``counter.statements`` (each with ``sql`` and
    ``params``) are live while the block runs. Statements of other threads are not counted. Only
    Databases attached with :func:`ponykit.attach` are observed.
    """
    for database in [db] if db is not None else attached_databases():
        kit = find_kit(database)
        if kit is not None:
            _listen(kit)
    counter = QueryCounter(db)
    stack = _active()
    stack.append(counter)
    try:
        yield counter
    finally:
        stack.remove(counter)


class _MaxQueries:
    """Context manager and decorator behind :func:`assert_max_queries`."""

    def __init__(self, limit: int, db: Database | None) -> None:
        if limit < 0:
            raise ValueError(f"assert_max_queries() needs a limit >= 0, got {limit}")
        self.limit = limit
        self.db = db
        self._stack: list[Any] = []

    def __enter__(self) -> QueryCounter:
        manager = count_queries(self.db)
        counter = manager.__enter__()
        self._stack.append((manager, counter))
        return counter

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        manager, counter = self._stack.pop()
        manager.__exit__(exc_type, exc, tb)
        if exc_type is None and counter.count > self.limit:
            raise QueryCountExceeded(
                f"expected at most {self.limit} SQL statement(s), {counter.count} ran:\n{counter.report()}"
            )

    def __call__(self, func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def assert_max_queries(n: int, *, db: Database | None = None) -> _MaxQueries:
    """Raise :class:`QueryCountExceeded` if the block or decorated function runs over ``n`` statements.

    Works as ``with assert_max_queries(3): ...`` (yielding the :class:`QueryCounter`) and as a
    decorator ``@assert_max_queries(3)``. The failure message lists every statement with its parameters.
    """
    return _MaxQueries(n, db)


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
    threshold: int = 5, *, db: Database | None = None, raise_on_exit: bool = True
) -> Iterator[list[NPlusOneFinding]]:
    """Flag statement shapes run at least ``threshold`` times with different parameters inside the block.

    Yields a list that is filled with :class:`NPlusOneFinding` when the block ends; with
    ``raise_on_exit`` (the default) a finding raises :class:`NPlusOneDetected` naming the entity and
    attribute to prefetch. Only SELECT statements are considered (repeated INSERTs are a bulk-write
    concern, not N+1).
    """
    if threshold < 2:
        raise ValueError(f"detect_n_plus_one() needs threshold >= 2, got {threshold}")
    findings: list[NPlusOneFinding] = []
    with count_queries(db) as counter:
        yield findings
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
