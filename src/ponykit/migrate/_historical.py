"""Historical models: a Pony Database of the entities as of a revision, for data migrations.

In a migration (``RunPython``) the Database is bound to the migration's own connection and transaction:
what it writes commits or rolls back with the migration (PostgreSQL, SQLite; MariaDB: the RunPython step's
own transaction). :func:`historical` outside a migration binds it to a new connection of the app's Database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pony.orm import Database

from ._connect import MigrationConnection, open_connection

__all__ = ["bind_on_connection", "historical"]


def bind_on_connection(snapshot: dict[str, Any], con: MigrationConnection) -> Database:
    """The entities of ``snapshot`` declared again and bound to ``con`` (its transaction is the caller's)."""
    from ._models import bind_historical

    database: Database = bind_historical(snapshot, con.dialect, con.connection)
    return database


def historical(db: Database, rev: str, *, directory: str | Path = "migrations") -> Database:
    """A Database with the entities as of revision ``rev`` (an id, a unique prefix or "head"), bound to a
    new connection to ``db``'s database in autocommit; use it in a ``db_session``."""
    from ._history import load_history

    history = load_history(directory)
    revision = history.single_head() if rev == "head" else history.resolve(rev)
    con = open_connection(db)
    return bind_on_connection(history.after(revision), con)
