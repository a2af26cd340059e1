"""The slow-query log on ``ponykit.sql.slow``: statements over ``kit.slow_query_ms``, with their plan.

A statement listener (:func:`install`, run by ``attach()``) sees every statement Pony's provider runs on
the Database, with its duration. One over the threshold gives one WARNING record with the SQL log's
``extra`` fields (``db.query.text``, ``duration_ms``, ``db.operation.name``...) and, when it is safe, its
plan (``plan``: :meth:`Plan.to_dict`; the rendered plan and its warnings in the message). The plan is
taken with EXPLAIN *without* ANALYZE (nothing is run twice), and only:

- for a SELECT, or a WITH whose body only reads (never a write, never an EXPLAIN of an EXPLAIN);
- when the statement succeeded, and not in an aborted PostgreSQL transaction;
- at most once per statement shape (``statement_shape``) per ``plan_interval`` seconds (default 60);
- on the statement's own connection, right after it, with a new cursor: not through Pony's provider, so
  ``count_queries()``, the N+1 detector and the SQL log never count it.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from pony.orm import Database

from .. import _pony, transactions
from .._kit import Kit, get_kit
from ..errors import OptionError, UnsupportedDatabase
from . import _sqltext
from ._explain import backend_name, explain_sql
from ._masking import mask_parameters
from ._sqllog import caller
from .nplusone import statement_shape

__all__ = ["DEFAULT_PLAN_INTERVAL", "install", "set_slow_query_log"]

log = logging.getLogger("ponykit.sql.slow")

#: Seconds between two plans of one statement shape.
DEFAULT_PLAN_INTERVAL = 60.0
_MAX_SHAPES = 10_000  # shapes remembered for rate limiting; forgotten all at once beyond that
_EXPLAIN_HEADS = frozenset({"EXPLAIN", "ANALYZE", "ANALYSE", "DESCRIBE", "DESC"})
_FACTS_CHARS = 4_000


@dataclass
class _State:
    plan_interval: float = DEFAULT_PLAN_INTERVAL
    planned: dict[str, float] = field(default_factory=dict)  # shape -> time.monotonic() of its last plan
    lock: threading.Lock = field(default_factory=threading.Lock)

    def may_plan(self, shape: str) -> bool:
        now = time.monotonic()
        with self.lock:
            last = self.planned.get(shape)
            if last is not None and now - last < self.plan_interval:
                return False
            if len(self.planned) >= _MAX_SHAPES:
                self.planned.clear()
            self.planned[shape] = now
            return True


_states: weakref.WeakKeyDictionary[Kit, _State] = weakref.WeakKeyDictionary()
_states_lock = threading.Lock()


def install(kit: Kit) -> None:
    """Watch the statements of ``kit``'s Database for slow ones (idempotent; attach() runs it)."""
    with _states_lock:
        if kit in _states:
            return
        state = _states[kit] = _State()
    kit.add_statement_listener(_make_listener(kit, state))


def set_slow_query_log(db: Database, ms: float | None, *, plan_interval: float | None = None) -> None:
    """Log statements on ``db`` taking ``ms`` milliseconds or more on ``ponykit.sql.slow``; None: stop.

    Same as ``attach(db, slow_query_ms=ms)``, at any time after attach. ``plan_interval`` sets how many
    seconds pass before a statement of the same shape gets a plan again (default 60; 0: every time).
    """
    if ms is not None and (isinstance(ms, bool) or not isinstance(ms, (int, float)) or ms < 0):
        raise OptionError(f"set_slow_query_log(db, ms) takes milliseconds >= 0 or None (off), got {ms!r}")
    bad = isinstance(plan_interval, bool) or not isinstance(plan_interval, (int, float, type(None)))
    if bad or (plan_interval is not None and plan_interval < 0):
        raise OptionError(f"set_slow_query_log(plan_interval=...) takes seconds >= 0, got {plan_interval!r}")
    kit = get_kit(db)
    install(kit)
    if plan_interval is not None:
        state = _states[kit]
        with state.lock:
            state.plan_interval = float(plan_interval)
            state.planned.clear()
    kit.slow_query_ms = None if ms is None else float(ms)


def _make_listener(kit: Kit, state: _State) -> Any:
    def listen(db: Database, cursor: Any, sql: str, arguments: Any, seconds: float, error: Any) -> None:
        threshold = kit.slow_query_ms
        if threshold is None or seconds * 1000.0 < threshold or not log.isEnabledFor(logging.WARNING):
            return
        _report(db, state, cursor, sql, arguments, seconds * 1000.0, threshold, error)

    return listen


def _report(
    db: Database,
    state: _State,
    cursor: Any,
    sql: str,
    arguments: Any,
    ms: float,
    threshold: float,
    error: BaseException | None,
) -> None:
    # Only a statement that may be explained is read in full: a bulk INSERT's text can be megabytes.
    head = _sqltext.head_word(sql)
    if head in ("SELECT", "WITH"):
        statement = _sqltext.classify(sql)
    else:
        statement = _sqltext.Statement("explain" if head in _EXPLAIN_HEADS else "other")
    plan: Any = None
    try:
        backend = backend_name(db)
        why = _no_plan_reason(statement, backend, cursor, arguments, error)
    except UnsupportedDatabase:
        backend = _pony.dialect(db)
        why = f"plans are not supported on {backend}"
    if why is None and not state.may_plan(statement_shape(sql)):
        why = f"a plan of this statement shape was logged less than {state.plan_interval:g} s ago"
    if why is None:
        try:
            plan = explain_sql(db, sql, arguments, cursor=cursor)
        except Exception as exc:
            why = f"EXPLAIN failed: {type(exc).__name__}"
            logging.getLogger("ponykit").debug(
                "ponykit: EXPLAIN for the slow-query log failed", exc_info=True
            )
    tables = _sqltext.facts(sql[:_FACTS_CHARS]).aliases.values()  # the first table is named early
    extra: dict[str, Any] = {
        "db.system.name": backend,
        "db.operation.name": head,
        "db.collection.name": next(iter(tables), None),
        "db.query.text": sql,
        "duration_ms": ms,
        "rowcount": _rowcount(cursor),
        "db.transaction.id": _transaction(db),
        "code.caller": caller(),
        "plan": plan.to_dict() if plan is not None else None,
        "plan.warnings": [str(w) for w in plan.warnings] if plan is not None else [],
    }
    masked = _masked_parameters(db, sql, arguments)
    if masked is not None:
        extra["db.query.parameters"] = masked
    if error is not None:
        extra["error.type"] = type(error).__name__
    detail = plan.render() if plan is not None else f"(no plan: {why})"
    log.warning(
        "slow SQL statement: %.1f ms (threshold %g ms)\n%s\n%s", ms, threshold, sql, detail, extra=extra
    )


def _no_plan_reason(
    statement: _sqltext.Statement, backend: str, cursor: Any, arguments: Any, error: BaseException | None
) -> str | None:
    if error is not None:
        return "the statement failed"
    if statement.kind == "explain":
        return "the statement is an EXPLAIN"
    if statement.kind != "select" or statement.multiple:
        return "only a SELECT (or a WITH ... SELECT that writes nothing) is explained"
    if type(arguments) is list:
        return "an executemany batch is not explained"
    if cursor is None or getattr(cursor, "connection", None) is None:
        return "no connection to run EXPLAIN on"
    if backend == "postgresql":
        import psycopg2.extensions as ext

        if cursor.connection.get_transaction_status() == ext.TRANSACTION_STATUS_INERROR:
            return "the transaction is aborted"
    return None


def _rowcount(cursor: Any) -> int | None:
    try:
        count = cursor.rowcount
    except Exception:  # noqa: BLE001 - a closed cursor
        return None
    return count if isinstance(count, int) and count >= 0 else None


def _transaction(db: Database) -> int | None:
    try:
        return transactions.transaction_id(db)
    except Exception:  # noqa: BLE001 - outside a session, during teardown
        return None


def _masked_parameters(db: Database, sql: str, arguments: Any) -> Any:
    """The parameters with sensitive values masked by the SQL log's masking, or None when masking failed
    (then no parameter value is logged at all)."""
    try:
        return mask_parameters(db, sql, arguments)
    except Exception:  # noqa: BLE001 - never log what could not be masked
        return None
