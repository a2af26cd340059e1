"""Transaction interception: the provider wrappers ``attach()`` installs and the per-transaction state.

Pony has no commit hook: its entity hooks fire at flush time, inside a transaction that may still roll
back. :func:`install` wraps the provider's ``commit``, ``rollback``, ``release``, ``execute`` and
``should_reconnect`` on the attached Database's provider instance, and per-transaction state
(:class:`TxState`) lives on Pony's session cache of the current thread. The public functions built on
it are in ``ponykit.transactions``.

When the outermost ``db_session`` ends, callbacks run after Pony has finished committing, as if no
session were open, so a callback may open its own ``db_session``. After an explicit ``commit()`` in the
middle of a session they run right after that commit, inside the still-open session.

A connection lost inside a transaction that had already written raises
:class:`~ponykit.errors.ConnectionLostError` instead of Pony's silent reconnect into a new transaction
(which commits only the writes made after the loss); see ``_wrap_should_reconnect``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pony.orm import Database

from .. import _pony
from .._kit import CommitEvent, Kit
from ..errors import CallbackError, ConnectionLostError
from ._classify import mark_unanswered_commit, server_answered
from ._state import TX_IDS, Callback, TxState, tx_state
from ._statements import (
    MEMO_MAX_CHARS,
    WRITE_MEMO,
    is_write_statement_memo,
    may_write_when_read_memo,
    refuse_write_statement,
)

__all__ = ()

log = logging.getLogger("ponykit.transactions")


@dataclass(frozen=True)
class _Lost:
    """A transaction lost with its connection: what the errors about it say (counts and names, no values)."""

    database: str
    statements: int
    entities: tuple[str, ...]

    def summary(self) -> str:
        text = f"{self.statements} writing statement(s)"
        if self.entities:
            text += f" on {', '.join(self.entities)}"
        return text

    def first_error(self) -> ConnectionLostError:
        return ConnectionLostError(
            f"ponykit: the connection to the {self.database} was lost inside a transaction that had "
            f"already run {self.summary()}. The database discarded that transaction with its connection. "
            "Plain Pony would reconnect and go on in a new transaction, committing only what comes after "
            "the loss; ponykit does not: nothing of this transaction is committed. Let the db_session end "
            "with this error (it rolls back) and run the whole transaction again, for example with "
            "@db_session(retry=N).",
            database=self.database,
            statements=self.statements,
            entities=self.entities,
        )

    def later_error(self) -> ConnectionLostError:
        return ConnectionLostError(
            f"ponykit: this transaction on the {self.database} was lost with its connection after "
            f"{self.summary()} (see the first ConnectionLostError); no statement can run in it and it cannot "
            "commit. End the db_session (it rolls back), or call rollback() to start a new transaction "
            "on a new connection, and run the whole transaction again.",
            database=self.database,
            statements=self.statements,
            entities=self.entities,
        )


class _Local(threading.local):
    def __init__(self) -> None:
        self.ready: list[Callback] = []  # confirmed callbacks waiting for the session to unwind
        self.errors: list[BaseException] = []  # failures of reraise=True callbacks, raised at session end
        self.running = False


local = _Local()


# ---------------------------------------------------------------------------------------------------------
# Interception, installed on one Database by attach()


def install(kit: Kit) -> None:
    """Wrap the provider methods of ``kit.db`` that transaction tracking needs (attach()'s first installer).

    Idempotent: a second ``attach()`` finds the methods wrapped and changes nothing.
    """
    db = kit.db
    if _pony.is_provider_method_wrapped(db, "commit"):
        return
    _pony.install_write_hooks(db, _record_saved)
    _pony.wrap_provider_method(db, "set_transaction_mode", _wrap_set_transaction_mode)
    _pony.wrap_provider_method(db, "commit", _make_commit_wrapper(kit))
    _pony.wrap_provider_method(db, "rollback", _wrap_rollback)
    _pony.wrap_provider_method(db, "release", _wrap_release)
    _pony.wrap_provider_method(db, "should_reconnect", functools.partial(_wrap_should_reconnect, db))
    _pony.wrap_provider_method(db, "execute", functools.partial(_wrap_execute, kit))
    kit.transaction_wrote = _transaction_wrote


def _transaction_wrote(cache: Any) -> bool:
    """Whether the transaction of ``cache`` has written: a write statement went through the wrapped
    ``execute`` (or a flush), or a bulk write was reported with ``record_writes``."""
    state = tx_state(cache)
    return state is not None and (state.has_written() or state.unsure_reads)


def _record_saved(cache: Any, obj: Any, status: str) -> None:
    state = tx_state(cache, create=True)
    if state is not None:
        state.record(type(obj), _pony.primary_key(obj))


def _record_link(cache: Any, attr: Any, owner: Any) -> None:
    state = tx_state(cache, create=True)
    if state is None:
        return
    entity, related, many_to_many = _pony.collection_attr_info(attr)
    state.record(entity, _pony.primary_key(owner))
    if many_to_many:
        # The link rows also change what the related side sees; which of its keys is not tracked here.
        state.record(related, None)


def _wrap_set_transaction_mode(original: Callable[..., Any]) -> Callable[..., Any]:
    def set_transaction_mode(connection: Any, cache: Any) -> Any:
        # The first call of every session: the place to see the cache before anything is flushed.
        db = cache.database
        _pony.install_write_hooks(db, _record_saved)
        _pony.track_collection_changes(cache, _record_link)
        result = original(connection, cache)
        state = tx_state(cache)
        if state is not None and state.mode is not None and not state.mode.is_default:
            _apply_mode(db, connection, state)
        return result

    return set_transaction_mode


def _apply_mode(db: Database, connection: Any, state: TxState) -> None:
    """Issue the statements of ``state.mode`` on ``connection`` before the transaction's first statement.

    They go to the driver's cursor directly, as Pony's own ``SET TRANSACTION ... SERIALIZABLE`` does: they
    are housekeeping, not the application's statements, so no listener or counter sees them.
    """
    assert state.mode is not None
    dialect = _pony.dialect(db)
    server = getattr(connection, "get_server_info", None)
    mariadb = callable(server) and "mariadb" in str(server()).lower()
    begin, restore = state.mode.begin_statements(dialect, mariadb=mariadb)
    cursor = connection.cursor()
    if dialect == "sqlite" and state.mode.timeout is not None and not state.restore:
        cursor.execute("PRAGMA busy_timeout")
        restore = [*restore, f"PRAGMA busy_timeout = {int(cursor.fetchone()[0])}"]
    for sql in begin:
        cursor.execute(sql)
    for sql in restore:
        if sql not in state.restore:
            state.restore.append(sql)


def _make_commit_wrapper(kit: Kit) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def commit(connection: Any, cache: Any = None) -> Any:
            if _pony.is_lost_connection(connection):
                # Committing now would keep only what was written after the loss: refuse; Pony rolls back.
                raise connection.error()
            if _is_closed(connection) and cache is not None and cache.in_transaction:
                # The driver knows the socket is gone: COMMIT cannot be sent, the server rolled back.
                raise _Lost(_pony.describe_database(kit.db), 0, ()).later_error()
            _run_before_commit(tx_state(cache))
            try:
                result = original(connection, cache)
            except BaseException as exc:
                if not server_answered(exc):
                    mark_unanswered_commit(exc)  # COMMIT went out and no answer came: outcome unknown
                raise
            state = tx_state(cache)
            if state is None:
                return result
            state.write_statements = 0
            state.unsure_reads = False
            state.txid = next(TX_IDS)
            # The database confirmed the commit: from here on nothing may undo it or raise into Pony.
            writes = state.take_writes()
            if writes:
                _publish(kit, CommitEvent(kit.db, writes))
            local.ready.extend(state.on_commit)
            state.on_commit.clear()
            state.on_rollback.clear()
            if _pony.session_depth() > 0:
                run_ready()  # an explicit commit() mid-session: its callbacks run now
            return result

        return commit

    return wrap


def _run_before_commit(state: TxState | None) -> None:
    """Run the transaction's before-commit steps (each once), then forget them and the journal."""
    if state is None or not state.before_commit:
        return
    steps, state.before_commit = state.before_commit, []
    for step in steps:
        step(state)
    state.journal.clear()


def _wrap_ending(
    after: Callable[[TxState | None], None], *, skip_lost: bool
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A wrapper maker for ``rollback``/``release``: call Pony's method, then ``after(state)`` whatever
    happened. With ``skip_lost``, a lost connection's stand-in is not passed to Pony: the dead connection
    already left the pool, there is nothing to release."""

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def end(connection: Any, cache: Any = None) -> Any:
            try:
                if skip_lost and _pony.is_lost_connection(connection):
                    return None
                return original(connection, cache)
            finally:
                after(tx_state(cache))

        return end

    return wrap


def _after_rollback(state: TxState | None) -> None:
    if state is not None:
        state.rolled_back = True
        state.txid = next(TX_IDS)
        state.write_statements = 0
        state.unsure_reads = False
        state.writes.clear()
        state.journal.clear()
        state.before_commit.clear()
        state.on_commit.clear()
        local.ready.extend(state.on_rollback)
        state.on_rollback.clear()


def _after_release(state: TxState | None) -> None:
    rolled_back = state is not None and state.rolled_back
    if state is not None and not rolled_back:
        # The session ended with no transaction left open: what was registered since the last commit had
        # nothing to wait for (a read-only stretch) and counts as committed.
        local.ready.extend(state.on_commit)
        state.on_commit.clear()
        state.on_rollback.clear()
    _finish_release(rolled_back)


_wrap_rollback = _wrap_ending(_after_rollback, skip_lost=False)
_wrap_release_only = _wrap_ending(_after_release, skip_lost=True)


def _wrap_release(original: Callable[..., Any]) -> Callable[..., Any]:
    """Put back what transaction() set on the connection before it returns to the pool (then release).

    If that fails the connection cannot be trusted to start from the defaults: it is dropped instead.
    """
    release = _wrap_release_only(original)

    def release_connection(connection: Any, cache: Any = None) -> Any:
        state = tx_state(cache)
        if state is not None and state.restore and not _pony.is_lost_connection(connection):
            statements, state.restore = state.restore, []
            try:
                cursor = connection.cursor()
                for sql in statements:
                    cursor.execute(sql)
            except Exception:
                log.warning(
                    "ponykit: could not reset the connection's transaction settings; dropping it",
                    exc_info=True,
                )
                _pony.drop_connection(cache.database, connection, cache)
                _after_release(state)
                return None
        return release(connection, cache)

    return release_connection


def _is_closed(connection: Any) -> bool:
    """True when the DB-API connection knows it is closed (psycopg2 ``closed``, PyMySQL ``open``)."""
    closed = getattr(connection, "closed", 0)
    if isinstance(closed, int) and closed:
        return True
    is_open = getattr(connection, "open", True)
    return is_open is False


def _wrap_should_reconnect(db: Database, original: Callable[..., Any]) -> Callable[..., Any]:
    # Pony asks should_reconnect(exc) only from SessionCache.reconnect(), when a statement of the current
    # thread's session on this Database failed. If Pony's answer is yes, it drops the dead connection,
    # which clears cache.in_transaction, so the guard of cache.connect() ("Transaction cannot be
    # continued") never fires and the statement runs again in a new transaction: the writes made before
    # are gone while the later ones commit. Before anything was written, that reconnect loses nothing
    # and stays; after a write, the transaction is marked lost and the statement raises instead.
    def should_reconnect(exc: BaseException) -> bool:
        if not original(exc):
            return False
        cache = _pony.session_cache(db)
        state = tx_state(cache)
        if cache is None or state is None or not state.has_written():
            return True
        entities = tuple(sorted(state.writes))
        lost = _Lost(_pony.describe_database(db), state.write_statements, entities)
        _pony.abandon_connection(cache, lost.later_error)
        log.warning(
            "ponykit: connection lost inside a transaction on the %s after %s; the transaction is lost "
            "and will roll back",
            lost.database,
            lost.summary(),
        )
        raise lost.first_error() from exc

    return should_reconnect


def _note_statement(db: Database, sql: str) -> None:
    """Count a statement that ran on ``db`` in this thread's session (called by the Kit's execute wrapper)."""
    known = WRITE_MEMO.get(sql) if len(sql) <= MEMO_MAX_CHARS else None  # inline: runs per statement
    if not (is_write_statement_memo(sql) if known is None else known):
        if may_write_when_read_memo(sql):  # a read calling a function that may write
            state = tx_state(_pony.session_cache(db), create=True)
            if state is not None:
                state.unsure_reads = True
        return
    cache = _pony.session_cache(db)
    if cache is not None:
        state = tx_state(cache, create=True)
        assert state is not None
        state.write_statements += 1


def _wrap_execute(kit: Kit, original: Callable[..., Any]) -> Callable[..., Any]:
    # Every statement passes here: without listeners, two tuple reads and the write note, nothing else.
    db = kit.db
    note = _note_statement

    def execute(cursor: Any, sql: str, arguments: Any = None, returning_id: bool = False) -> Any:
        if _pony.read_intent(db) is not None:  # replica_session(), transaction(read_only=True) on db
            refuse_write_statement(db, sql)
        before = kit.before_statement  # row-level security settings (ponykit.security.rls), or None
        sent = sql if before is None else before(cursor, sql, arguments)  # listeners see `sql` alone
        listeners = kit._execute_listeners
        observers = kit._statement_listeners
        if not (listeners or observers):
            result = original(cursor, sent, arguments, returning_id)
            note(db, sql)  # the transaction wrote: losing its connection now would lose work
            return result
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            result = original(cursor, sent, arguments, returning_id)
            note(db, sql)
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            elapsed = time.perf_counter() - start
            for listener in listeners:
                try:
                    listener(db, sql, arguments, elapsed, error)
                except Exception:
                    logging.getLogger("ponykit").exception("ponykit: execute listener %r raised", listener)
            for observer in observers:
                try:
                    observer(db, cursor, sql, arguments, elapsed, error)
                except Exception:
                    logging.getLogger("ponykit").exception("ponykit: statement listener %r raised", observer)

    return execute


def _finish_release(rolled_back: bool) -> None:
    if local.running or not (local.ready or local.errors):
        return
    if _pony.session_depth() > 0:
        run_ready()  # rollback() mid-session: the session goes on, callbacks run inside it
        return
    # The outermost db_session is unwinding: run callbacks as if it were already closed.
    with _pony.outside_session():
        run_ready()
    if not local.errors:
        return
    if rolled_back:
        # The session is ending by rollback: the exception that caused it is what propagates.
        local.errors.clear()
        return
    if _pony.connected_caches():
        return  # another database's release comes next and raises
    errors, local.errors = local.errors, []
    # Raising stops Pony's release loop: close the remaining connection-less caches the way it would.
    _pony.release_idle_caches()
    raise CallbackError(
        f"{len(errors)} on_commit/on_rollback callback(s) registered with reraise=True failed after the "
        f"transaction committed; the first error: {errors[0]!r}"
    ) from errors[0]


def run_ready() -> None:
    local.running = True
    try:
        while local.ready:
            callback = local.ready.pop(0)
            try:
                callback.fn()
            except Exception as exc:
                log.exception("ponykit: transaction callback %r raised", callback.fn)
                if callback.reraise:
                    local.errors.append(exc)
    finally:
        local.running = False


def _publish(kit: Kit, event: CommitEvent) -> None:
    for subscriber in kit.subscribers:
        try:
            subscriber(event)
        except Exception:
            log.exception("ponykit: commit subscriber %r raised", subscriber)
