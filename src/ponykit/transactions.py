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
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pony.orm import Database

from . import _pony
from .errors import CallbackError, ConfigurationError
from .kit import CommitEvent, Kit, attached_databases, find_kit, get_kit

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

    def record(self, entity: Any, pk: Any) -> None:
        for cls in _pony.entity_lineage(entity):
            keys = self.writes.setdefault(cls.__name__, set())
            if keys is not None:
                if pk is None:
                    self.writes[cls.__name__] = None
                else:
                    keys.add(pk)

    def take_writes(self) -> dict[str, frozenset[Any] | None]:
        writes = {name: (None if keys is None else frozenset(keys)) for name, keys in self.writes.items()}
        self.writes.clear()
        return writes


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
        raise TypeError(f"on_commit() takes a callable, got {type(fn).__name__}")
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
        raise TypeError(f"on_rollback() takes a callable, got {type(fn).__name__}")
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
        for key in keys:
            state.record(entity, key)


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
            result = original(connection, cache)
            state = _state(cache)
            if state is None:
                return result
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
                state.writes.clear()
                state.on_commit.clear()
                _local.ready.extend(state.on_rollback)
                state.on_rollback.clear()

    return rollback


def _wrap_release(original: Callable[..., Any]) -> Callable[..., Any]:
    def release(connection: Any, cache: Any = None) -> Any:
        try:
            return original(connection, cache)
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
