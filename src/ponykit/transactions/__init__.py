"""Transaction hooks: ``on_commit`` / ``on_rollback`` with Django's semantics, and commit events.

Pony has no commit hook: its entity hooks fire at flush time, inside a transaction that may still roll
back. ``attach(db)`` wraps the provider's ``commit``, ``rollback`` and ``release`` on the attached
Database's provider instance (``transactions._hooks``), and keeps per-transaction state on Pony's session
cache of the current thread:

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
(which commits only the writes made after the loss).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pony.orm import Database

from .. import _pony
from .._kit import Kit, get_kit
from ..errors import OptionError
from ._async import run_in_session, session_threads, set_session_threads
from ._classify import ErrorClass, classify_error
from ._hooks import install as install  # attach() runs it: ponykit.kit.INSTALLERS
from ._isolation import ISOLATION_LEVELS, Isolation
from ._resolve import resolve_db
from ._retrying import Attempt, retrying
from ._run import Backoff, transaction
from ._savepoint import savepoint
from ._state import Callback, tx_state

__all__ = [
    "ISOLATION_LEVELS",
    "Attempt",
    "Backoff",
    "ErrorClass",
    "Isolation",
    "classify_error",
    "on_commit",
    "on_rollback",
    "pending_writes",
    "record_writes",
    "retrying",
    "run_in_session",
    "savepoint",
    "session_threads",
    "set_session_threads",
    "transaction",
    "transaction_id",
]


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
    if not kit.run_commit_callbacks:
        return  # a test suite that asked for on_commit callbacks not to run
    state = tx_state(_pony.connect_session(kit.db), create=True)
    assert state is not None
    state.on_commit.append(Callback(fn, kit.reraise_callback_errors if reraise is None else reraise))


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
    state = tx_state(_pony.connect_session(kit.db), create=True)
    assert state is not None
    state.on_rollback.append(Callback(fn, kit.reraise_callback_errors if reraise is None else reraise))


def record_writes(db: Database, entity: Any, keys: Iterable[Any] | None) -> None:
    """Report writes made behind Pony's back (bulk operations, raw SQL) to the current transaction.

    ``keys`` are primary keys (scalars or tuples), or None when any row of ``entity`` may have changed.
    They reach the Kit's subscribers in the :class:`~ponykit.kit.CommitEvent` of the commit, and are
    dropped if the transaction rolls back. Needs an open ``db_session``.
    """
    state = tx_state(_pony.require_session_cache(db), create=True)
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
    state = tx_state(_pony.session_cache(db))
    if state is None or not state.writes:
        return {}
    return {name: (None if keys is None else frozenset(keys)) for name, keys in state.writes.items()}


def transaction_id(db: Database) -> int | None:
    """A number naming the current transaction on ``db`` in this thread (for logs and spans), or None.

    None outside a ``db_session``. Unique in the process; a session gets a new one after each
    ``commit()`` or ``rollback()``. It names ponykit's bookkeeping of the transaction, not a server-side
    transaction id (the server may not have started one yet).
    """
    state = tx_state(_pony.session_cache(db), create=True)
    return None if state is None else state.txid


def _resolve_kit(db: Database | None, func: str) -> Kit:
    return get_kit(resolve_db(db, f"{func}()", f"{func}(fn, db=db)"))
