"""Connections: a session's connection lost inside a transaction, and side connections for long jobs.

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
from collections.abc import Callable
from typing import Any

from pony.orm import Database

from ._typing import SessionCache

__all__ = [
    "LostConnection",
    "abandon_connection",
    "describe_database",
    "is_lost_connection",
    "open_side_connection",
    "sqlite_filename",
]


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


# Connections outside Pony's session: a side connection that holds a server-side lock for a long job.


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
