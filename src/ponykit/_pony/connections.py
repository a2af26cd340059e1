"""Connections outside Pony's session: a side connection that holds a server-side lock for a long job."""

from __future__ import annotations

from typing import Any

from pony.orm import Database

__all__ = ["open_side_connection", "sqlite_filename"]


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
