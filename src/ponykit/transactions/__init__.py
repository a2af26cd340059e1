"""Transaction hooks: ``on_commit`` / ``on_rollback`` with Django's semantics, and commit events.

Pony has no commit hook: its entity hooks fire at flush time, inside a transaction that may still roll
back. ponykit wraps the provider's ``commit``, ``rollback`` and ``release`` on the attached Database's
provider instance, and keeps per-transaction state on Pony's session cache of the current thread:

* callbacks registered with :func:`on_commit` run after the database confirmed the commit, in
  registration order; they are dropped if the transaction rolls back;
* callbacks registered with :func:`on_rollback` run after a rollback and are dropped on commit;
* every commit that wrote something is reported to the Kit's subscribers as a
  :class:`~ponykit.kit.CommitEvent` naming the entities and primary keys written.

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
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pony.orm import Database

from .. import _pony
from ..errors import CallbackError, ConfigurationError, ConnectionLostError, OptionError
from ..kit import CommitEvent, Kit, attached_databases, find_kit, get_kit

__all__ = ["on_commit", "on_rollback", "pending_writes", "record_writes"]

log = logging.getLogger("ponykit.transactions")

_STATE_ATTR = "_ponykit_tx_"


@dataclass
class _Callback:
    fn: Callable[[], Any]
    reraise: bool


@dataclass
class _TxState:
    """What ponykit tracks for the open transaction of one session cache."""

    on_commit: list[_Callback] = field(default_factory=list)
    on_rollback: list[_Callback] = field(default_factory=list)
    writes: dict[str, set[Any] | None] = field(default_factory=dict)
    rolled_back: bool = False
    # Statements run since the transaction began that wrote (or locked) something: a connection lost
    # after one of them loses work, one lost before any of them loses nothing.
    write_statements: int = 0

    def has_written(self) -> bool:
        return bool(self.write_statements or self.writes)

    def record(self, entity: Any, pk: Any) -> None:
        for cls in _pony.entity_lineage(entity):
            keys = self.writes.setdefault(cls.__name__, set())
            if keys is not None:
                if pk is None:
                    self.writes[cls.__name__] = None
                else:
                    keys.add(pk)

    def record_many(self, entity: Any, pks: Iterable[Any]) -> None:
        # One lineage walk for many keys: bulk writes report 100,000s of keys per call.
        pks = pks if isinstance(pks, (list, tuple, set, frozenset)) else list(pks)
        if None in pks:
            self.record(entity, None)
            return
        for cls in _pony.entity_lineage(entity):
            keys = self.writes.setdefault(cls.__name__, set())
            if keys is not None:
                keys.update(pks)

    def take_writes(self) -> dict[str, frozenset[Any] | None]:
        writes = {name: (None if keys is None else frozenset(keys)) for name, keys in self.writes.items()}
        self.writes.clear()
        return writes


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
        self.ready: list[_Callback] = []  # confirmed callbacks waiting for the session to unwind
        self.errors: list[BaseException] = []  # failures of reraise=True callbacks, raised at session end
        self.running = False


_local = _Local()


def _state(cache: Any, create: bool = False) -> _TxState | None:
    if cache is None:
        return None
    state: _TxState | None = cache.__dict__.get(_STATE_ATTR)
    if state is None and create:
        state = _TxState()
        setattr(cache, _STATE_ATTR, state)
    return state


# ---------------------------------------------------------------------------------------------------------
# Public API


def on_commit(fn: Callable[[], Any], *, db: Database | None = None, reraise: bool | None = None) -> None:
    """Run ``fn()`` after the current transaction on ``db`` commits; drop it if the transaction rolls back.

    Inside a ``db_session``, ``fn`` waits for the next commit of ``db``: the end of the outermost
    session, or an explicit ``commit()`` / ``db.commit()`` before it. Callbacks run in registration
    order, after the database confirmed the commit. At the end of the session they run once Pony has
    finished, so they may open their own ``db_session``. Outside any ``db_session`` there is no
    transaction to wait for and ``fn`` runs immediately (as Django does).

    A callback that raises is logged with its traceback (logger ``ponykit.transactions``) and the other
    callbacks still run; the committed transaction is not turned into an error. With ``reraise=True``
    (default: ``attach(db, reraise_callback_errors=...)``), the first such failure is raised as
    :class:`~ponykit.errors.CallbackError` when the outermost ``db_session`` exits.

    ``db`` may be omitted when one attached Database is in use in this session (or only one is attached).
    """
    if not callable(fn):
        raise OptionError(
            f"on_commit() takes a callable, got {type(fn).__name__}; pass the function, not its result"
        )
    if not _pony.in_db_session():
        fn()
        return
    kit = _resolve_kit(db, "on_commit")
    state = _state(_pony.connect_session(kit.db), create=True)
    assert state is not None
    state.on_commit.append(_Callback(fn, kit.reraise_callback_errors if reraise is None else reraise))


def on_rollback(fn: Callable[[], Any], *, db: Database | None = None, reraise: bool | None = None) -> None:
    """Run ``fn()`` if the current transaction on ``db`` rolls back; drop it if the transaction commits.

    Rollback means an exception leaving the ``db_session``, ``rollback()`` / ``db.rollback()``, or a
    failed commit. Callbacks run after the rollback, in registration order, with the error handling of
    :func:`on_commit`. Outside any ``db_session`` there is no transaction that could roll back, so the
    callback is never called.
    """
    if not callable(fn):
        raise OptionError(
            f"on_rollback() takes a callable, got {type(fn).__name__}; pass the function, not its result"
        )
    if not _pony.in_db_session():
        return
    kit = _resolve_kit(db, "on_rollback")
    state = _state(_pony.connect_session(kit.db), create=True)
    assert state is not None
    state.on_rollback.append(_Callback(fn, kit.reraise_callback_errors if reraise is None else reraise))


def record_writes(db: Database, entity: Any, keys: Iterable[Any] | None) -> None:
    """Report writes made behind Pony's back (bulk operations, raw SQL) to the current transaction.

    ``keys`` are primary keys (scalars or tuples), or None when any row of ``entity`` may have changed.
    They reach the Kit's subscribers in the :class:`~ponykit.kit.CommitEvent` of the commit, and are
    dropped if the transaction rolls back. Needs an open ``db_session``.
    """
    state = _state(_pony.require_session_cache(db), create=True)
    assert state is not None
    if keys is None:
        state.record(entity, None)
    else:
        state.record_many(entity, keys)


def pending_writes(db: Database) -> Mapping[str, frozenset[Any] | None]:
    """What the current transaction on ``db`` has written so far and not committed yet.

    Entity name -> primary keys (or None when unknown), as the next :class:`~ponykit.kit.CommitEvent`
    would report them; empty outside a db_session or before any write. Writes Pony has not flushed yet
    are not included (see ``ponykit._pony.unflushed_entities``).
    """
    state = _state(_pony.session_cache(db))
    if state is None or not state.writes:
        return {}
    return {name: (None if keys is None else frozenset(keys)) for name, keys in state.writes.items()}


# ---------------------------------------------------------------------------------------------------------
# Interception, installed on one Database by attach()


def _install(kit: Kit) -> None:
    db = kit.db
    _pony.install_write_hooks(db, _record_saved)
    _pony.wrap_provider_method(db, "set_transaction_mode", _wrap_set_transaction_mode)
    _pony.wrap_provider_method(db, "commit", _make_commit_wrapper(kit))
    _pony.wrap_provider_method(db, "rollback", _wrap_rollback)
    _pony.wrap_provider_method(db, "release", _wrap_release)
    _pony.wrap_provider_method(db, "should_reconnect", functools.partial(_wrap_should_reconnect, db))


def _record_saved(cache: Any, obj: Any, status: str) -> None:
    state = _state(cache, create=True)
    if state is not None:
        state.record(type(obj), _pony.primary_key(obj))


def _record_link(cache: Any, attr: Any, owner: Any) -> None:
    state = _state(cache, create=True)
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
        return original(connection, cache)

    return set_transaction_mode


def _make_commit_wrapper(kit: Kit) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def commit(connection: Any, cache: Any = None) -> Any:
            if _pony.is_lost_connection(connection):
                # Committing now would keep only what was written after the loss: refuse; Pony rolls back.
                raise connection.error()
            result = original(connection, cache)
            state = _state(cache)
            if state is None:
                return result
            state.write_statements = 0
            # The database confirmed the commit: from here on nothing may undo it or raise into Pony.
            writes = state.take_writes()
            if writes:
                _publish(kit, CommitEvent(kit.db, writes))
            _local.ready.extend(state.on_commit)
            state.on_commit.clear()
            state.on_rollback.clear()
            if _pony.session_depth() > 0:
                _run_ready()  # an explicit commit() mid-session: its callbacks run now
            return result

        return commit

    return wrap


def _wrap_rollback(original: Callable[..., Any]) -> Callable[..., Any]:
    def rollback(connection: Any, cache: Any = None) -> Any:
        try:
            return original(connection, cache)
        finally:
            state = _state(cache)
            if state is not None:
                state.rolled_back = True
                state.write_statements = 0
                state.writes.clear()
                state.on_commit.clear()
                _local.ready.extend(state.on_rollback)
                state.on_rollback.clear()

    return rollback


def _wrap_release(original: Callable[..., Any]) -> Callable[..., Any]:
    def release(connection: Any, cache: Any = None) -> Any:
        try:
            # A lost connection's stand-in: the dead connection already left the pool, nothing to release.
            return None if _pony.is_lost_connection(connection) else original(connection, cache)
        finally:
            state = _state(cache)
            rolled_back = state is not None and state.rolled_back
            if state is not None and not rolled_back:
                # The session ended with no transaction left open: what was registered since the last
                # commit had nothing to wait for (a read-only stretch) and counts as committed.
                _local.ready.extend(state.on_commit)
                state.on_commit.clear()
                state.on_rollback.clear()
            _finish_release(rolled_back)

    return release


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
        state = _state(cache)
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


_READ_HEAD = re.compile(r"[\s(]*(?:(select|show)|explain)\b", re.IGNORECASE)
# Tried only where "for"/"lock" occurs in the lowered tail: a search with IGNORECASE over the tail cost
# 40 µs per statement (measured), this about 1 µs on a loaded machine.
_LOCKING_AT = re.compile(
    r"(?:for\s+(?:no\s+key\s+update|key\s+share|update|share)|lock\s+in\s+share\s+mode)\b"
)
_TAIL = 512  # a locking clause ends the statement (PostgreSQL, MySQL): no need to scan a huge IN list


def _is_write_statement(sql: str) -> bool:
    """False for statements that only read: a plain SELECT or SHOW, an EXPLAIN that does not run its query.

    Everything else counts as a write, conservatively: DML, DDL, SET, CTEs (``WITH x AS (DELETE ...)``),
    and reads that lock rows (``FOR UPDATE``/``FOR SHARE``), whose locks go with the connection. A
    SELECT that writes through a function it calls cannot be told from its text and counts as a read.
    Runs for every statement, so it looks at the head and the tail only, never copies the whole text.
    """
    head = _READ_HEAD.match(sql)
    if head is None:
        return True
    if head.group(1) is None:  # EXPLAIN: ANALYZE runs the statement
        return "analyze" in sql[: head.end() + 32].lower()
    return _locks_rows(sql[-_TAIL:].lower())


def _locks_rows(tail: str) -> bool:
    for word in ("for", "lock"):
        i = tail.rfind(word)
        while i >= 0:
            before = tail[i - 1] if i else " "
            if not (before.isalnum() or before == "_") and _LOCKING_AT.match(tail, i):
                return True
            i = tail.rfind(word, 0, i)
    return False


# Pony runs the same few SQL texts over and over (one per query shape), so the answer is remembered per
# text: classifying a statement afresh cost ~4 µs per round trip in a lookup benchmark (measured; the regex
# code is cold again after each round trip). Long texts (bulk statements, huge IN lists) are classified
# each time rather than kept alive and hashed; the memo is emptied when full rather than grown.
_WRITE_MEMO: dict[str, bool] = {}
_MEMO_MAX_CHARS = 2000
_MEMO_MAX_ENTRIES = 4096


def _is_write_statement_memo(sql: str) -> bool:
    """:func:`_is_write_statement`, remembered for short texts."""
    if len(sql) > _MEMO_MAX_CHARS:
        return _is_write_statement(sql)
    found = _WRITE_MEMO.get(sql)
    if found is None:
        found = _is_write_statement(sql)
        if len(_WRITE_MEMO) >= _MEMO_MAX_ENTRIES:
            _WRITE_MEMO.clear()
        _WRITE_MEMO[sql] = found
    return found


def _note_statement(db: Database, sql: str) -> None:
    """Count a statement that ran on ``db`` in this thread's session (called by the Kit's execute wrapper)."""
    known = _WRITE_MEMO.get(sql) if len(sql) <= _MEMO_MAX_CHARS else None  # inline: runs per statement
    if not (_is_write_statement_memo(sql) if known is None else known):
        return
    cache = _pony.session_cache(db)
    if cache is not None:
        state = _state(cache, create=True)
        assert state is not None
        state.write_statements += 1


def _finish_release(rolled_back: bool) -> None:
    if _local.running or not (_local.ready or _local.errors):
        return
    if _pony.session_depth() > 0:
        _run_ready()  # rollback() mid-session: the session goes on, callbacks run inside it
        return
    # The outermost db_session is unwinding: run callbacks as if it were already closed.
    with _pony.outside_session():
        _run_ready()
    if not _local.errors:
        return
    if rolled_back:
        # The session is ending by rollback: the exception that caused it is what propagates.
        _local.errors.clear()
        return
    if _pony.connected_caches():
        return  # another database's release comes next and raises
    errors, _local.errors = _local.errors, []
    # Raising stops Pony's release loop: close the remaining connection-less caches the way it would.
    _pony.release_idle_caches()
    raise CallbackError(
        f"{len(errors)} on_commit/on_rollback callback(s) registered with reraise=True failed after the "
        f"transaction committed; the first error: {errors[0]!r}"
    ) from errors[0]


def _run_ready() -> None:
    _local.running = True
    try:
        while _local.ready:
            callback = _local.ready.pop(0)
            try:
                callback.fn()
            except Exception as exc:
                log.exception("ponykit: transaction callback %r raised", callback.fn)
                if callback.reraise:
                    _local.errors.append(exc)
    finally:
        _local.running = False


def _publish(kit: Kit, event: CommitEvent) -> None:
    for subscriber in kit.subscribers:
        try:
            subscriber(event)
        except Exception:
            log.exception("ponykit: commit subscriber %r raised", subscriber)


def _resolve_kit(db: Database | None, func: str) -> Kit:
    if db is not None:
        return get_kit(db)
    in_use = [d for d in _pony.session_databases() if find_kit(d) is not None]
    candidates = in_use or attached_databases()
    if len(candidates) == 1:
        kit = find_kit(candidates[0])
        assert kit is not None
        return kit
    if not candidates:
        raise ConfigurationError(
            f"{func}() needs an attached Database: call ponykit.attach(db) when setting the database up"
        )
    raise ConfigurationError(
        f"{func}() cannot tell which Database the callback belongs to ({len(candidates)} attached "
        f"databases are in use); pass it explicitly: {func}(fn, db=db)"
    )
