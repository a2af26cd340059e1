"""Historical models: a Pony Database of the entities as of a revision, for data migrations.

In a migration (``RunPython``) the Database is bound to the migration's own connection and transaction:
what it writes commits or rolls back with the migration (PostgreSQL, SQLite; MariaDB: the RunPython step's
own transaction). :func:`historical` outside a migration binds it to a new connection of the app's Database.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from pony.orm import Database

from ._connect import MigrationConnection, open_connection

__all__ = ["bind_on_connection", "historical"]


class _JoinedCursor:
    """A SQLite cursor on which ``BEGIN`` does nothing: the runner's ``BEGIN IMMEDIATE`` is already open,
    and Pony's SQLite provider begins its own transaction at the first write of a session."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.lstrip().upper().startswith("BEGIN"):
            return self
        return self._cursor.execute(sql, *args)

    def __iter__(self) -> Any:
        return iter(self._cursor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _JoinedConnection:
    """The migration's SQLite connection as the historical models see it (see :class:`_JoinedCursor`)."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def cursor(self, *args: Any) -> _JoinedCursor:
        return _JoinedCursor(self._connection.cursor(*args))

    def execute(self, sql: str, *args: Any) -> Any:
        return self.cursor().execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def bind_on_connection(
    snapshot: dict[str, Any], con: MigrationConnection, *, keys: Any = None, owned: bool = False
) -> Database:
    """The entities of ``snapshot`` declared again and bound to ``con`` (its transaction is the caller's).

    ``owned``: ``con`` was opened for this Database alone: ``disconnect()`` closes it, and so does the
    garbage collector once the Database is gone.
    """
    from ._models import bind_historical

    connection = _JoinedConnection(con.connection) if con.dialect == "sqlite" else con.connection
    close = con.close if owned else None
    database: Database = bind_historical(snapshot, con.dialect, connection, keys=keys, on_disconnect=close)
    if close is not None:
        weakref.finalize(database, close)
    return database


def historical(db: Database, rev: str, *, directory: str | Path = "migrations") -> Database:
    """A Database with the entities as of revision ``rev`` (an id, a unique prefix or "head"), bound to a
    new connection to ``db``'s database in autocommit; use it in a ``db_session``.

    The connection is its own: call ``disconnect()`` on the returned Database when done (it is also closed
    when the Database is garbage-collected). Encrypted attributes use ``db``'s key ring.
    """
    from ._history import load_history

    history = load_history(directory)
    revision = history.single_head() if rev == "head" else history.resolve(rev)
    con = open_connection(db)
    try:
        return bind_on_connection(history.after(revision), con, keys=_keys(db), owned=True)
    except BaseException:
        con.close()  # mapping failed: the connection has no owner
        raise


def _keys(db: Database) -> Any:
    """The key ring attached to the application's Database, if any (for encrypted attributes)."""
    from .._kit import find_kit

    kit = find_kit(db)
    return None if kit is None else getattr(kit, "keys", None)
