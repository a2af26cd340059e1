"""The migration's own connection: a new DB-API connection with the Database's arguments, in autocommit.

The runner owns this connection's transactions (explicit ``BEGIN``/``COMMIT``), takes the migration lock
on it and runs every statement of a migration on it; the application's ``db_session`` connections are not
touched.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from pony.orm import Database

from .. import _pony
from ..errors import MigrationError

__all__ = ["MigrationConnection", "open_connection"]


@dataclass
class MigrationConnection:
    """A DB-API ``connection`` in autocommit mode and its ``dialect`` (sqlite, postgres, mysql)."""

    connection: Any
    dialect: str
    keys: Any = None  # the application's key ring (RunPython's historical models read encrypted values)

    def execute(self, sql: str, params: Any = None) -> Any:
        """Run one statement; return its cursor (rows fetched by the caller)."""
        cursor = self.connection.cursor()
        if params is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, params)
        return cursor

    def rows(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """All rows of a query."""
        cursor = self.execute(sql, params)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    def scalar(self, sql: str, params: Any = None) -> Any:
        """The first column of the first row (None without rows)."""
        rows = self.rows(sql, params)
        return rows[0][0] if rows else None

    @property
    def param(self) -> str:
        """The driver's placeholder."""
        return "?" if self.dialect == "sqlite" else "%s"

    def close(self) -> None:
        """Close the connection (a session lock held on it is released by the server)."""
        with contextlib.suppress(Exception):  # closing a broken connection must not hide the real error
            self.connection.close()


def open_connection(db: Database) -> MigrationConnection:
    """A new autocommit connection to the database ``db`` is bound to."""
    if not _pony.is_bound(db):
        raise MigrationError("the Database is not bound: bind it (ponykit.bind_url) before migrating")
    dialect = _pony.dialect(db)
    if dialect not in _pony.DIALECTS:
        raise MigrationError(f"migrations support sqlite, postgres and mysql, not {dialect!r}")
    if dialect == "sqlite" and _pony.is_in_memory_sqlite(db):
        raise MigrationError("an in-memory SQLite database cannot be migrated from another connection")
    con = _pony.connection_factory(db)()
    if dialect == "postgres":
        con.autocommit = True
    elif dialect == "mysql":
        con.autocommit(True)
    else:
        con.isolation_level = None  # Pony's default too: the runner writes BEGIN itself
    from .._kit import find_kit

    kit = find_kit(db)
    return MigrationConnection(con, dialect, keys=None if kit is None else getattr(kit, "keys", None))
