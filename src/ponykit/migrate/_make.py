"""make and init: write the next migration file from the models, and start (or baseline) a history."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pony.orm import Database

from ..errors import MigrationStateError
from ._connect import open_connection
from ._history import load_history
from ._lock import migration_lock, sqlite_begin
from ._versions import ensure_table, read_rows, write_row

__all__ = ["init", "make"]


def make(
    db: Database,
    message: str,
    *,
    directory: str | Path = "migrations",
    renames: dict[str, str] | None = None,
    backfill: dict[str, Any] | None = None,
    allow_drop: bool = False,
    allow_lossy: bool = False,
    empty: bool = False,
) -> Path | None:
    """Compare the models of ``db`` with ``schema.lock.json`` and write the migration that leads from one
    to the other (and the new lock). None when nothing changed, unless ``empty`` (a migration without
    operations: a place for RunPython/RunSQL, or a merge of several heads)."""
    from ._autodetect import autodetect
    from ._files import read_lock, write_lock, write_migration
    from ._ops_base import empty_snapshot
    from ._snapshot import snapshot

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    history = load_history(folder)
    lock = read_lock(folder)
    old = lock["snapshot"] if lock else empty_snapshot()
    if lock is None and history.order:
        raise MigrationStateError(f"{folder} holds migrations but no schema.lock.json: restore the lock file")
    new = snapshot(db)
    operations = autodetect(
        old,
        new,
        renames=renames or {},
        backfill=backfill or {},
        allow_drop=allow_drop,
        allow_lossy=allow_lossy,
    )
    heads = history.heads
    if not operations and not empty and len(heads) <= 1:
        return None
    path: Path = write_migration(folder, operations, message, tuple(heads))
    revision = load_history(folder).heads
    write_lock(folder, revision[0] if len(revision) == 1 else None, new)
    return path


def init(db: Database, *, directory: str | Path = "migrations", from_db: bool = False) -> Path:
    """Start the history of ``directory`` with a first migration creating the models' entities.

    ``from_db``: the database already has the tables (created by Pony's ``create_tables=True`` or by
    hand); ponykit first checks that the live schema equals what Pony maps the models to, then records the
    first revision as applied without running it (a baseline). Differences raise MigrationStateError,
    each named.
    """
    folder = Path(directory)
    if load_history(folder).order:
        raise MigrationStateError(f"{folder} already holds migrations: use make for the next one")
    if from_db:
        _same_as_models(db)
    path = make(db, "initial", directory=folder, empty=True)
    assert path is not None
    if from_db:
        _baseline(db, folder)
    return path


def _same_as_models(db: Database) -> None:
    from ._compare import compare
    from ._execute import server_version
    from ._introspect import introspect
    from ._models import build
    from ._snapshot import snapshot

    con = open_connection(db)
    try:
        wanted = build(snapshot(db), con.dialect, server_version(con)).schema
        differences = compare(wanted, introspect(con.connection, con.dialect))
    finally:
        con.close()
    if differences:
        listed = "; ".join(str(d) for d in differences[:20])
        raise MigrationStateError(
            f"init --from-db: the database does not match the models ({len(differences)} difference(s)): "
            f"{listed}. Bring them in line first (the baseline must be exact)"
        )


def _baseline(db: Database, folder: Path) -> None:
    history = load_history(folder)
    head = history.single_head()
    assert head is not None
    con = open_connection(db)
    try:
        with migration_lock(con, 60.0):
            if con.dialect == "sqlite":
                sqlite_begin(con, 60.0)
            elif con.dialect == "postgres":
                con.execute("BEGIN")
            ensure_table(con)
            if head not in read_rows(con):
                started = time.monotonic()
                write_row(
                    con,
                    head,
                    history.parents(head),
                    history.checksum(head),
                    "applied",
                    0,
                    int((time.monotonic() - started) * 1000),
                )
            if con.dialect != "mysql":
                con.execute("COMMIT")
    finally:
        con.close()
