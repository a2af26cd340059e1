"""``transaction()`` and ``retrying()``: one real transaction per attempt, classified retries with backoff.

An attempt is one outermost ``db_session`` on the chosen Database. It starts a real transaction before
the first statement (on PostgreSQL Pony would otherwise read in autocommit, one snapshot per SELECT) with
the requested isolation level, read-only flag, deferrable flag and statement timeout, and ends by
committing or rolling back. Between attempts the session is over: the transaction is rolled back, the
connection is back in Pony's pool, and ``on_commit`` callbacks of the failed attempt are dropped.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from contextvars import Token
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from pony.orm import CommitException, Database, db_session

from .. import _pony
from ..errors import (
    AmbiguousCommitError,
    OptionError,
    RetriesExhausted,
    TransactionStateError,
)
from ._classify import classify_error, error_code, unanswered_commit_error
from ._isolation import Isolation, Mode
from ._resolve import resolve_db
from ._state import tx_state

__all__ = ["Backoff", "Block", "Retry", "transaction"]

log = logging.getLogger("ponykit.transactions")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Backoff:
    """How long to wait before each retry: exponential with full jitter, within a time budget.

    Before attempt ``n + 1`` the wait is ``uniform(0, min(cap, base * 2 ** (n - 1)))`` seconds (with
    ``jitter=False``: the upper bound itself). Full jitter spreads the retries of transactions that
    failed together, so they do not collide again. No retry starts once the time since the first
    attempt plus the next wait would pass ``budget`` seconds.
    """

    base: float = 0.01
    cap: float = 1.0
    budget: float = 30.0
    jitter: bool = True

    def __post_init__(self) -> None:
        for name in ("base", "cap", "budget"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise OptionError(f"Backoff({name}=...) takes seconds >= 0, got {value!r}")

    def delay(self, failures: int) -> float:
        """The wait after the ``failures``-th failed attempt (1-based)."""
        ceiling = min(self.cap, self.base * (2 ** min(failures - 1, 62)))
        return _jitter.uniform(0.0, ceiling) if self.jitter else ceiling


_DEFAULT_BACKOFF = Backoff()
_READ_ONLY_SOURCE = "transaction(read_only=True)"
# A hot standby refuses SERIALIZABLE transactions: a serializable read-only transaction stays on the
# primary (writes are still refused before any SQL).
_SERIALIZABLE_SOURCE = 'transaction(read_only=True, isolation="serializable")'
_jitter = random.Random()  # noqa: S311 - spreads retries in time; nothing secret depends on it


class _Active(threading.local):
    def __init__(self) -> None:
        self.blocks: list[Block] = []  # open transaction() blocks of this thread, outermost first


_active = _Active()


class Block:
    """One entered ``transaction()``: the outermost one owns a db_session, a nested one joins it."""

    def __init__(self, db: Database, mode: Mode, attempt: int) -> None:
        self.db = db
        self.mode = mode
        self.attempt = attempt
        self.owner = False
        self.set_mode = False  # joined a plain db_session and set the mode of its transaction
        self.started = 0.0
        self.intent: Token[Any] | None = None  # the read intent this block set (replicas), to reset

    def _end_intent(self) -> None:
        if self.intent is not None:
            _pony.reset_read_intent(self.intent)
            self.intent = None

    def enter(self) -> None:
        outer = next((b for b in reversed(_active.blocks) if b.db is self.db), None)
        if outer is not None:
            if not self.mode.is_default and self.mode != outer.mode:
                raise TransactionStateError(
                    f"transaction({_describe(self.mode)}) is nested in a "
                    f"transaction({_describe(outer.mode)}) on the same Database: a nested transaction "
                    "joins the outer one and cannot change its isolation, read-only flag or timeout; set "
                    "them on the outermost transaction()"
                )
            _active.blocks.append(self)
            return
        if _pony.in_db_session():
            self._join_session()
            _active.blocks.append(self)
            return
        self.started = time.perf_counter()
        if self.mode.read_only and _pony.routes_reads(self.db) is not None:
            # A Database with replicas: this transaction may run on one (see ponykit.binding).
            # The intent is for this Database only: writes to another one in the block are not refused.
            serializable = self.mode.isolation == "serializable"
            source = _SERIALIZABLE_SOURCE if serializable else _READ_ONLY_SOURCE
            intent = _pony.ReadIntent(source, transaction=True, route=not serializable, database=self.db)
            self.intent = _pony.set_read_intent(intent)
        try:
            db_session.__enter__()
        except BaseException:
            self._end_intent()
            raise
        self.owner = True
        try:
            self._begin()
        except BaseException as exc:
            try:
                db_session.__exit__(type(exc), exc, exc.__traceback__)  # rolls back, releases the connection
            finally:
                self._end_intent()
            raise
        _active.blocks.append(self)
        if log.isEnabledFor(logging.DEBUG):  # describe_database() is not free: only when recorded
            log.debug(
                "ponykit: begin transaction (attempt %d) on the %s",
                self.attempt,
                _pony.describe_database(self.db),
                extra={
                    "attempt": self.attempt,
                    "isolation": self.mode.isolation,
                    "read_only": self.mode.read_only,
                },
            )

    def _join_session(self) -> None:
        # Inside a plain db_session: join it. Before its first transaction has begun, this block can still
        # make it a real transaction with the requested mode; after, only the default mode can join.
        cache = _pony.session_cache(self.db)
        if cache is None or not _pony.is_in_transaction(cache):
            self._begin()
            self.set_mode = True
            return
        if self.mode.is_default and not self.mode.deferrable:
            return
        raise TransactionStateError(
            f"transaction({_describe(self.mode)}) inside a db_session whose transaction on the "
            f"{_pony.describe_database(self.db)} has already begun: its isolation and read-only flag are "
            "fixed. Open the transaction() before the first statement that writes (or outside the db_session)"
        )

    def _begin(self) -> None:
        cache = _pony.require_session_cache(self.db)
        state = tx_state(cache, create=True)
        assert state is not None
        state.mode = self.mode
        # A real transaction from the first statement on (PostgreSQL: out of autocommit; SQLite: BEGIN
        # IMMEDIATE; MySQL: SET TRANSACTION before it starts). Pony's public way to ask for one.
        self.db.get_connection()

    def exit(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        popped = _active.blocks.pop()
        assert popped is self, "transaction() blocks must be exited in the reverse order of entering"
        if not self.owner:
            if self.set_mode:
                state = tx_state(_pony.session_cache(self.db))
                if state is not None:
                    state.mode = None  # later transactions of the enclosing db_session use the defaults
            return
        try:
            db_session.__exit__(exc_type, exc, tb)  # commits, or rolls back when exc_type is set
        finally:
            self._end_intent()
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "ponykit: %s transaction (attempt %d) on the %s",
                "rolled back" if exc_type is not None else "committed",
                self.attempt,
                _pony.describe_database(self.db),
                extra={
                    "attempt": self.attempt,
                    "duration_ms": (time.perf_counter() - self.started) * 1000.0,
                    "error_class": exc_type.__name__ if exc_type is not None else None,
                },
            )


def _describe(mode: Mode) -> str:
    parts = []
    if mode.isolation:
        parts.append(f"isolation={mode.isolation!r}")
    if mode.read_only:
        parts.append("read_only=True")
    if mode.deferrable:
        parts.append("deferrable=True")
    if mode.timeout is not None:
        parts.append(f"timeout={mode.timeout!r}")
    return ", ".join(parts)


class Retry:
    """The retry loop shared by the decorator and :func:`retrying`: counts, classifies, waits, logs."""

    def __init__(self, retry: int, backoff: Backoff, db: Database) -> None:
        self.retry = retry
        self.backoff = backoff
        self.db = db
        self.errors: list[BaseException] = []
        self.first = time.monotonic()
        self.waited = 0.0

    def failed(self, attempt: int, exc: BaseException) -> BaseException | None:
        """Decide after ``attempt`` failed with ``exc``: None to run again (after the wait), else the
        exception to raise (``exc`` itself when it is not for retrying)."""
        kind = classify_error(exc)
        if kind == "ambiguous":
            return ambiguous_commit(self.db, attempt, exc)
        if kind == "fatal" or not isinstance(exc, Exception):
            return exc
        self.errors.append(exc)
        if self.retry == 0:
            return exc
        wait = self.backoff.delay(attempt)
        elapsed = time.monotonic() - self.first
        if attempt > self.retry or elapsed + wait > self.backoff.budget:
            return self._exhausted(attempt, elapsed)
        log.info(
            "ponykit: transaction attempt %d on the %s failed with %s (%s); retrying in %.3f s",
            attempt,
            _pony.describe_database(self.db),
            type(exc).__name__,
            error_code(exc),
            wait,
            extra={
                "attempt": attempt,
                "wait_s": wait,
                "error_class": type(exc).__name__,
                "error_code": error_code(exc),
            },
        )
        if wait > 0:
            time.sleep(wait)
        self.waited += wait
        return None

    def _exhausted(self, attempt: int, elapsed: float) -> RetriesExhausted:
        causes = ", ".join(f"{type(e).__name__}({error_code(e)})" for e in self.errors)
        why = f"{self.retry} retries" if attempt > self.retry else f"the {self.backoff.budget:g} s budget"
        log.warning(
            "ponykit: transaction on the %s gave up after %d attempts (%s)",
            _pony.describe_database(self.db),
            attempt,
            why,
            extra={
                "attempt": attempt,
                "waited_s": self.waited,
                "error_class": type(self.errors[-1]).__name__,
            },
        )
        error = RetriesExhausted(
            f"ponykit: the transaction on the {_pony.describe_database(self.db)} failed {attempt} times with "
            f"transient errors ({causes}) and {why} are used up ({elapsed:.2f} s, {self.waited:.2f} s of "
            "waiting). Contention this persistent usually needs a change: lock the rows in one order with "
            "for_update(), make the transaction shorter, or allow more retries.",
            errors=self.errors,
            waited=self.waited,
        )
        error.__cause__ = self.errors[-1]
        return error


def ambiguous_commit(db: Database, attempt: int, exc: BaseException) -> AmbiguousCommitError:
    """The error for a COMMIT of ``attempt`` that failed without an answer (logged), caused by the COMMIT's
    own driver error."""
    database = _pony.describe_database(db)
    entities = _entities_of(exc)
    log.error(
        "ponykit: COMMIT on the %s failed without an answer (attempt %d): the transaction may or may "
        "not be applied; not retried",
        database,
        attempt,
        extra={"attempt": attempt, "error_class": type(exc).__name__, "error_code": error_code(exc)},
    )
    error = AmbiguousCommitError(
        f"ponykit: COMMIT of attempt {attempt} on the {database} failed ({type(exc).__name__}) and the "
        "server did not answer: the transaction may or may not have been applied. It is not run again "
        "(it could be applied twice). Check the database (an idempotency key, a unique constraint, a "
        "read of the rows) before doing the work again.",
        database=database,
        attempt=attempt,
        entities=entities,
    )
    # The driver's error of the COMMIT itself, not what a rollback on the dead connection raised after.
    cause = unanswered_commit_error(exc)
    if cause is None and isinstance(exc, CommitException) and exc.exceptions:
        cause = exc.exceptions[0][1]
    error.__cause__ = cause if cause is not None else exc
    return error


def _entities_of(exc: BaseException) -> tuple[str, ...]:
    entities = getattr(exc, "entities", None)
    return tuple(entities) if isinstance(entities, (tuple, list)) else ()


class transaction:
    """Run a function (or a block) in one real database transaction, retried on transient errors.

    As a decorator::

        @transaction(retry=5, isolation="serializable")
        def transfer(src, dst, amount): ...

    the function runs in its own outermost ``db_session``, in a real transaction that starts before its
    first statement, with the given ``isolation`` (``"read_committed"``, ``"repeatable_read"``,
    ``"serializable"``; None keeps the server's default), ``read_only``, ``deferrable`` (PostgreSQL:
    a serializable read-only transaction that waits for a safe snapshot and then cannot fail) and
    ``timeout`` (seconds per statement). When it fails with a transient error (deadlock, serialization
    failure, lock timeout, busy SQLite, Pony's optimistic check, a connection lost before COMMIT), the
    transaction is rolled back, the connection released, and after a wait from ``backoff`` it runs
    again, at most ``retry`` more times. A COMMIT that fails without an answer raises
    :class:`~ponykit.errors.AmbiguousCommitError` and is never run again; other errors propagate at
    once; when retries run out, :class:`~ponykit.errors.RetriesExhausted` carries every attempt's error.

    As a context manager (``with transaction(isolation="repeatable_read", read_only=True): ...``) it does
    the same without retries (a ``with`` block cannot be run again; use :func:`retrying` for that).

    Nested in another ``transaction()`` or in a ``db_session``, it joins the open transaction (a
    function with ``retry`` raises :class:`~ponykit.errors.TransactionStateError` there: retrying half a
    transaction is wrong). ``db`` is needed only when more than one Database is attached.
    """

    def __init__(
        self,
        *,
        retry: int = 0,
        backoff: Backoff | None = None,
        isolation: Isolation | None = None,
        read_only: bool = False,
        deferrable: bool = False,
        timeout: float | None = None,
        db: Database | None = None,
    ) -> None:
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise OptionError(f"transaction(retry=...) takes a whole number of retries >= 0, got {retry!r}")
        if backoff is not None and not isinstance(backoff, Backoff):
            raise OptionError(
                f"transaction(backoff=...) takes a ponykit.Backoff, got {type(backoff).__name__}"
            )
        if db is not None and not isinstance(db, Database):
            raise OptionError(f"transaction(db=...) takes a pony.orm.Database, got {type(db).__name__}")
        self.retry = retry
        self.backoff = backoff or _DEFAULT_BACKOFF
        self.mode = Mode(isolation, read_only, deferrable, timeout)
        self.db = db
        self._blocks = threading.local()

    def __call__(self, fn: F) -> F:
        if not callable(fn):
            raise OptionError(f"@transaction(...) decorates a function, got {type(fn).__name__}")

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            return self.run(fn, *args, **kwargs)

        return run  # type: ignore[return-value]

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``fn(*args, **kwargs)`` in a transaction with this one's options (and retries)."""
        db = resolve_db(self.db, "transaction()", "transaction(db=db)")
        if self.retry and _pony.in_db_session():
            raise TransactionStateError(
                f"transaction(retry={self.retry}) called inside an open db_session or transaction: a retry "
                "would run again only this part of the enclosing transaction, whose earlier work the "
                "failure already rolled back. Put the retry on the outermost function instead"
            )
        loop = Retry(self.retry, self.backoff, db)
        attempt = 1
        while True:
            block = Block(db, self.mode, attempt)
            try:
                block.enter()
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    block.exit(type(exc), exc, exc.__traceback__)
                    raise
                block.exit(None, None, None)
                return result
            except BaseException as exc:
                if not block.owner:
                    raise  # joined an enclosing transaction: its owner decides
                decision = loop.failed(attempt, exc)
                if decision is exc:
                    raise
                if decision is not None:
                    raise decision from decision.__cause__
            attempt += 1

    def __enter__(self) -> None:
        if self.retry:
            raise TransactionStateError(
                f"transaction(retry={self.retry}) cannot be a `with` block: Python cannot run a block again. "
                "Decorate a function with @transaction(retry=...), or loop: "
                "`for attempt in ponykit.retrying(retry=...): with attempt: ...`"
            )
        block = Block(resolve_db(self.db, "transaction()", "transaction(db=db)"), self.mode, 1)
        block.enter()
        stack = self._blocks.__dict__.setdefault("stack", [])
        stack.append(block)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        block: Block = self._blocks.stack.pop()
        try:
            block.exit(exc_type, exc, tb)
        except BaseException as error:
            if block.owner and classify_error(error) == "ambiguous":
                ambiguous = ambiguous_commit(block.db, 1, error)
                raise ambiguous from ambiguous.__cause__
            raise
