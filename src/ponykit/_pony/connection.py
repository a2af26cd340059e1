"""A session's connection: statements ponykit runs on it, a connection lost inside a transaction, and side
connections for long jobs.

Statements ponykit runs itself (bulk writes, COPY) go through the session's connection so that Pony's
statement hooks and ponykit's listeners see them like Pony's own.

A session's connection lost inside a transaction: taking it out of Pony's hands.

Pony 0.7.20 reconnects a session whose connection failed (``SessionCache.reconnect``: the provider's
``should_reconnect(exc)`` decides, ``provider.drop`` closes the dead connection *and clears
``cache.in_transaction``*, then ``cache.connect()`` opens a new one). Clearing the flag first defeats the
guard in ``connect()`` ("Transaction cannot be continued because database connection failed"), so a
transaction that had written is silently continued on a new connection. ponykit stops that per Database
(``transactions``): the dead connection leaves the pool and a :class:`LostConnection` takes its place in
the session cache until the session ends or rolls back.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pony.orm.core as _core
from pony.orm import Database

from ._typing import SessionCache

__all__ = [
    "LostConnection",
    "abandon_connection",
    "connection_target",
    "copy_in_session",
    "describe_database",
    "drop_connection",
    "execute_in_session",
    "in_self_reported_statement",
    "is_lost_connection",
    "open_side_connection",
    "raw_connection",
    "sqlite_filename",
]


def execute_in_session(db: Database, sql: str, arguments: Any) -> Any:
    """Run one statement in the current db_session's transaction through Pony's provider; the cursor.

    Goes through ``db._exec_sql`` with ``start_transaction=True``: pending ORM changes are flushed
    first, the transaction is started (``BEGIN IMMEDIATE`` on SQLite), and the provider's ``execute``
    (so ponykit's execute listeners, Pony's SQL log and statistics) sees the statement. A list of tuples
    runs as ``executemany``. The session commits or rolls back the statement with everything else.
    """
    _statement_state.self_reported += 1
    try:
        return db._exec_sql(sql, arguments, start_transaction=True)
    finally:
        _statement_state.self_reported -= 1


def copy_in_session(db: Database, sql: str, data: Any) -> int:
    """Run ``COPY ... FROM STDIN`` reading the file-like ``data`` in the current db_session's transaction
    (PostgreSQL, psycopg2); the number of rows copied.

    The statement takes the path of :func:`execute_in_session` (``db._exec_sql``): pending changes are
    flushed, the transaction is started, Pony's SQL log and statistics and the provider's ``execute``
    (so ponykit's execute listeners and ``count_queries``) see it, with no arguments. A lost connection
    goes through Pony's ``cache.reconnect``, so the same rule as for every statement applies: before
    the transaction wrote anything it is reconnected and the COPY run again; after a write, an attached
    Database raises ``ConnectionLostError`` (``transactions``) and nothing is retried. Only the cursor
    differs: its ``execute`` is psycopg2's ``copy_expert``, since COPY's rows come from a file.
    """
    _statement_state.self_reported += 1
    try:
        cache = db._get_cache()
        cache.immediate = True
        connection = cache.prepare_connection_for_query_execution()
        cursor = _CopyCursor(connection.cursor(), data)
        if _core.local.debug:
            _core.log_sql(sql)
        provider = db.provider
        start = time.time()  # Pony's statistics use time.time()
        try:
            provider.execute(cursor, sql, None, False)
        except Exception as exc:  # noqa: BLE001 - as db._exec_sql: reconnect() re-raises what it cannot mend
            # (and raises ConnectionLostError when the transaction already wrote: no partial retry)
            connection = cache.reconnect(exc)
            data.seek(0)
            cursor = _CopyCursor(connection.cursor(), data)
            if _core.local.debug:
                _core.log_sql(sql)
            start = time.time()
            provider.execute(cursor, sql, None, False)
        if cache.immediate:
            cache.in_transaction = True
        db._update_local_stat(sql, start)
        return int(cursor.rowcount)
    finally:
        _statement_state.self_reported -= 1


class _CopyCursor:
    """Stands in for a DB-API cursor in ``provider.execute``: ``execute(sql)`` runs ``copy_expert``."""

    _CHUNK = 1 << 18  # bytes psycopg2 reads from the file per call

    def __init__(self, cursor: Any, data: Any) -> None:
        self._cursor = cursor
        self._data = data

    def execute(self, sql: str, arguments: Any = None) -> None:
        if arguments is not None:
            raise TypeError("COPY FROM STDIN takes its rows from the file, not from arguments")
        self._cursor.copy_expert(sql, self._data, self._CHUNK)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _StatementState(threading.local):
    def __init__(self) -> None:
        self.self_reported = 0


_statement_state = _StatementState()


def in_self_reported_statement() -> bool:
    """True while :func:`execute_in_session` runs a statement whose writes the caller reports itself.

    Statement listeners that infer writes from SQL text skip these: the caller (a bulk operation)
    reports the exact keys it wrote with ``record_writes``.
    """
    return _statement_state.self_reported > 0


class LostConnection:
    """Stands in for the DB-API connection of a session whose transaction was lost with its connection.

    Pony keeps using the session cache's ``connection``: every new statement asks it for a cursor and
    a commit calls its ``commit()``; both raise ``make_error()``. ``rollback()`` and ``close()`` succeed
    with nothing to do (the database discarded the transaction when the connection went), so the
    session can end by rollback as usual.
    """

    __slots__ = ("_make_error",)

    def __init__(self, make_error: Callable[[], BaseException]) -> None:
        self._make_error = make_error

    def error(self) -> BaseException:
        """A fresh exception saying the transaction was lost (raised by every refused call)."""
        return self._make_error()

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        """Refuse: the transaction this statement would join is gone."""
        raise self._make_error()

    def commit(self) -> None:
        """Refuse: committing would keep only what was written after the loss."""
        raise self._make_error()

    def rollback(self) -> None:
        """Nothing to roll back: the server discarded the transaction with its connection."""

    def close(self) -> None:
        """Nothing to close: the real connection was closed when it was abandoned."""

    def __repr__(self) -> str:
        return "<ponykit LostConnection>"


def abandon_connection(cache: SessionCache, make_error: Callable[[], BaseException]) -> None:
    """Put a :class:`LostConnection` in place of ``cache``'s dead connection and drop that from the pool.

    ``cache.in_transaction`` stays set, as the transaction is still the session's until it rolls back:
    Pony then neither opens a new connection for the session nor starts a new transaction on one, and
    its commit reaches the provider's ``commit`` (which ponykit makes raise). The provider's pool
    forgets the dead connection, so the thread's next session connects afresh.
    """
    dead = cache.connection
    cache.connection = LostConnection(make_error)
    cache.in_transaction = True
    if dead is None or isinstance(dead, LostConnection):
        return
    # Closing a dead socket may complain (PyMySQL: "Already closed"); the pool forgot it before closing.
    with contextlib.suppress(Exception):
        # Not the cache: provider.drop(con, cache) would clear in_transaction, the very bug avoided here.
        cache.database.provider.drop(dead, None)


def drop_connection(db: Database, connection: Any, cache: SessionCache | None) -> None:
    """Close ``connection`` and make the pool forget it, instead of returning it for reuse."""
    with contextlib.suppress(Exception):
        db.provider.drop(connection, cache)


def is_lost_connection(connection: Any) -> bool:
    """True if ``connection`` is the stand-in :func:`abandon_connection` left in a session cache."""
    return isinstance(connection, LostConnection)


def describe_database(db: Database) -> str:
    """``"postgres database 'app' at db.internal"``: which database, for messages; never a password."""
    provider = db.provider
    family = db.provider_name or (provider.dialect if provider is not None else "unbound")
    pool = getattr(provider, "pool", None)
    kwargs: dict[str, Any] = dict(getattr(pool, "kwargs", None) or {})
    name = kwargs.get("database") or kwargs.get("dbname") or kwargs.get("db")
    host = kwargs.get("host") or kwargs.get("unix_socket")
    text = f"{family} database"
    if name:
        text += f" {str(name)!r}"
    if host:
        text += f" at {host}"
    return text


def connection_target(db: Database) -> tuple[str | None, str | None, int | None]:
    """``(database, host, port)`` from the Database's connection arguments, each None when not given.

    SQLite: the file name (":memory:" in memory) and no host. Never a user name or password.
    """
    pool = getattr(db.provider, "pool", None)
    filename = getattr(pool, "filename", None)
    if filename is not None:
        return str(filename), None, None
    kwargs: dict[str, Any] = dict(getattr(pool, "kwargs", None) or {})
    name = kwargs.get("database") or kwargs.get("dbname") or kwargs.get("db")
    host = kwargs.get("host") or kwargs.get("unix_socket")
    port = kwargs.get("port")
    return (
        None if name is None else str(name),
        None if host is None else str(host),
        int(port) if isinstance(port, (int, str)) and str(port).isdigit() else None,
    )


def open_side_connection(db: Database) -> Any:
    """A new DB-API connection with the Database's connection arguments, in autocommit mode.

    Not Pony's pooled connection of the thread: it lives as long as the caller keeps it (close it), is
    never committed or rolled back by a ``db_session``, and a lock taken on it (PostgreSQL advisory
    lock, MariaDB ``GET_LOCK``) is released by the server if the process dies. PostgreSQL and MySQL only.
    """
    pool = db.provider.pool
    con = pool.dbapi_module.connect(*pool.args, **pool.kwargs)
    if hasattr(con, "autocommit") and not callable(con.autocommit):  # psycopg2: a property
        con.autocommit = True
    else:  # PyMySQL: a method
        con.autocommit(True)
    return con


def sqlite_filename(db: Database) -> str | None:
    """The database file of a SQLite Database, or None for an in-memory database."""
    pool = db.provider.pool
    if getattr(pool, "is_shared_memory_db", False) or pool.filename == ":memory:":
        return None
    return str(pool.filename)


def raw_connection(db: Database) -> Any:
    """The DB-API connection of the current db_session (starting its transaction)."""
    return db.get_connection()
