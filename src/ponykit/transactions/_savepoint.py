"""``savepoint()``: a block inside a transaction that can fail without failing the transaction.

Pony has no savepoints, and a ``SAVEPOINT``/``ROLLBACK TO`` run by hand leaves Pony's identity map showing
what the rolled-back statements wrote. ``savepoint()`` runs the statements through Pony's connection for
the session and keeps the session true: after a rollback to the savepoint it is as if the block never ran
(see ``ponykit._pony.savepoints`` for how), with Django's semantics for the callbacks.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from pony.orm import Database

from .. import _pony
from ..errors import TransactionStateError
from ._classify import classify_error
from ._hooks import local, run_ready
from ._resolve import resolve_db
from ._state import Callback, TxState, tx_state

__all__ = ["savepoint"]

log = logging.getLogger("ponykit.transactions")

_NAMES = itertools.count(1)  # next() on a count is atomic under the GIL: names are unique process-wide


def savepoint(db: Database | None = None) -> Savepoint:
    """A context manager: run a block inside a savepoint of the current transaction on ``db``.

    On entry the transaction is made real if it was not yet (PostgreSQL runs Pony's reading sessions in
    autocommit, SQLite in autocommit until the first write: a SAVEPOINT there would be a transaction of
    its own that RELEASE commits), pending changes are flushed, and ``SAVEPOINT pk_sp_N`` is issued.
    Savepoints nest to any depth.

    * The block succeeds: its changes are flushed and the savepoint released; they commit or roll back
      with the enclosing transaction, and its ``on_commit``/``on_rollback`` callbacks wait for that.
    * The block raises: ``ROLLBACK TO SAVEPOINT``, then the session is as if the block never ran:
      objects created in it are gone from the identity map (using one raises
      ``OperationWithDeletedObjectError``), objects changed or deleted in it show their values from
      before the block, loaded collections are as they were, rows first loaded in the block are re-read,
      Pony's query-result cache is cleared, its ``on_commit`` callbacks are dropped (as in Django), its
      ``on_rollback`` callbacks run right away, and the writes it recorded for cache invalidation are
      forgotten. The exception then propagates (catch it outside the block to go on).
    * A transient error (deadlock, serialization failure, lock timeout: ``classify_error``) is not rolled
      back here: the database may already have rolled back the whole transaction (MySQL does on a
      deadlock, and the savepoint is gone), so only the outermost ``transaction(retry=...)`` can run it
      again. The block's ``on_commit`` callbacks are dropped and the error propagates.

    Outside a ``db_session`` (or ``transaction()``) there is no transaction to take a savepoint in:
    :class:`~ponykit.errors.TransactionStateError`. ``db`` may be omitted when one attached Database is
    in use in this session (or only one is attached).
    """
    return Savepoint(db)


@dataclass
class _Open:
    db: Database
    name: str
    snapshot: _pony.SessionSnapshot
    cache: Any
    state: TxState
    txid: int
    on_commit: int
    on_rollback: int
    writes: dict[str, set[Any] | None]
    journal: int = 0


class Savepoint:
    """The context manager :func:`savepoint` returns; one block at a time."""

    __slots__ = ("_db", "_open")

    def __init__(self, db: Database | None) -> None:
        self._db = db
        self._open: _Open | None = None

    def __enter__(self) -> None:
        if self._open is not None:
            raise TransactionStateError(
                "ponykit: this savepoint() is already open; call savepoint() again for a nested block"
            )
        if not _pony.in_db_session():
            raise TransactionStateError(
                "ponykit: savepoint() needs an open transaction and none is open in this thread; use it "
                "inside `with db_session:` (or `with ponykit.transaction():`)"
            )
        db = resolve_db(self._db, "savepoint()", "savepoint(db)")
        if _pony.in_flush(db):
            raise TransactionStateError(
                "ponykit: savepoint() cannot be opened while Pony is flushing (in before_insert/"
                "after_update and the like); open it before the changes are flushed"
            )
        name = f"pk_sp_{next(_NAMES)}"
        _pony.savepoint_statement(db, f"SAVEPOINT {name}", flush=True)
        cache = _pony.require_session_cache(db)
        state = tx_state(cache, create=True)
        assert state is not None
        self._open = _Open(
            db,
            name,
            _pony.snapshot_session(db),
            cache,
            state,
            state.txid,
            len(state.on_commit),
            len(state.on_rollback),
            {key: (None if keys is None else set(keys)) for key, keys in state.writes.items()},
            len(state.journal),
        )

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        opened, self._open = self._open, None
        if opened is None:  # a ponykit bug, or __exit__ called by hand without __enter__
            raise RuntimeError("ponykit: savepoint exited without being entered")
        if exc is None:
            _check_still_open(opened, None)
            try:
                _pony.flush_session(opened.db)  # the block's changes belong inside the savepoint
            except BaseException as error:
                _undo(opened, error)
                raise
            _pony.savepoint_statement(opened.db, f"RELEASE SAVEPOINT {opened.name}", flush=False)
            return False
        _check_still_open(opened, exc)
        _undo(opened, exc)
        return False


def _check_still_open(opened: _Open, exc: BaseException | None) -> None:
    cache = _pony.session_cache(opened.db)
    if cache is opened.cache and _pony.is_alive(cache) and opened.state.txid == opened.txid:
        return
    raise TransactionStateError(
        f"ponykit: the transaction of savepoint {opened.name} on the {_pony.describe_database(opened.db)} "
        "ended inside the block (commit() or rollback() was called there), and the savepoint with it: "
        "work done in the block after that is not covered by it. Do not commit or roll back inside a "
        "savepoint() block; raise an exception to undo the block"
    ) from exc


def _undo(opened: _Open, exc: BaseException) -> None:
    """The block failed with ``exc``: roll back to the savepoint and put the session back (not for a
    transient error, which belongs to the outermost transaction)."""
    state = opened.state
    dropped = len(state.on_commit) - opened.on_commit
    del state.on_commit[opened.on_commit :]
    del state.journal[opened.journal :]  # the audit entries of the block's writes
    if classify_error(exc) == "transient":
        log.debug(
            "ponykit: savepoint %s left without rollback on a transient %s; the outermost transaction "
            "retries",
            opened.name,
            type(exc).__name__,
            extra={"error_class": type(exc).__name__},
        )
        return
    db = opened.db
    _pony.savepoint_statement(db, f"ROLLBACK TO SAVEPOINT {opened.name}", flush=False)
    _pony.savepoint_statement(db, f"RELEASE SAVEPOINT {opened.name}", flush=False)
    undone: list[Callback] = state.on_rollback[opened.on_rollback :]
    del state.on_rollback[opened.on_rollback :]
    state.writes.clear()
    state.writes.update(opened.writes)
    _pony.restore_session(db, opened.snapshot)
    log.debug(
        "ponykit: rolled back to savepoint %s after %s (%d on_commit callback(s) dropped)",
        opened.name,
        type(exc).__name__,
        dropped,
        extra={"error_class": type(exc).__name__},
    )
    if undone:
        local.ready.extend(undone)
        if not local.running:
            run_ready()
