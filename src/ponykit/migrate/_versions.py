"""The version table ``ponykit_migration``: which revisions are applied, how far a partial one got.

Created by ponykit (not an entity; introspection and snapshots leave it out), idempotently, by the process
holding the migration lock. One row per applied (or partially applied, MariaDB) revision.

``status`` is ``applied``, ``partial`` (MariaDB: an upgrade stopped after ``steps_done`` units; the next
upgrade resumes it) or ``reverting`` (MariaDB: a downgrade stopped after undoing ``steps_done`` units of
the revision's backward plan; the next downgrade resumes it, upgrade refuses it).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from ._connect import MigrationConnection

__all__ = [
    "TABLE",
    "VersionRow",
    "delete_row",
    "ensure_table",
    "read_rows",
    "set_progress",
    "table_exists",
    "write_row",
]

TABLE = "ponykit_migration"

_COLUMNS = (
    "revision VARCHAR(64) PRIMARY KEY, parents VARCHAR(255) NOT NULL, applied_at {timestamp} NOT NULL,"
    " checksum CHAR(64) NOT NULL, status VARCHAR(16) NOT NULL, steps_done INTEGER NOT NULL,"
    " ponykit_version VARCHAR(32) NOT NULL, duration_ms INTEGER NOT NULL"
)
_DDL = {
    "postgres": f"CREATE TABLE {TABLE} ({_COLUMNS.format(timestamp='TIMESTAMP')})",
    "mysql": f"CREATE TABLE {TABLE} ({_COLUMNS.format(timestamp='DATETIME(6)')}) ENGINE=InnoDB",
    "sqlite": f"CREATE TABLE {TABLE} ({_COLUMNS.format(timestamp='TIMESTAMP')})",
}


@dataclass(frozen=True)
class VersionRow:
    """One row: a revision, its parents, when, the file's checksum, applied|partial|reverting, steps done
    (units applied; for ``reverting``, units undone)."""

    revision: str
    parents: tuple[str, ...]
    applied_at: datetime.datetime
    checksum: str
    status: str
    steps_done: int
    ponykit_version: str
    duration_ms: int


def table_exists(con: MigrationConnection) -> bool:
    """Whether the version table exists (in the connection's schema/database)."""
    if con.dialect == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    elif con.dialect == "postgres":
        sql = (
            "SELECT 1 FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_name = %s"
        )
    else:
        sql = "SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = %s"
    return con.scalar(sql, (TABLE,)) is not None


def ensure_table(con: MigrationConnection) -> None:
    """Create the version table if missing (call it holding the migration lock: concurrent CREATE TABLE IF
    NOT EXISTS races on PostgreSQL's catalogs)."""
    if not table_exists(con):
        con.execute(_DDL[con.dialect])


def read_rows(con: MigrationConnection, *, exists: bool = False) -> dict[str, VersionRow]:
    """Every row by revision ({} when the table does not exist yet; ``exists=True``: the caller made sure
    it does, which saves a round trip)."""
    if not exists and not table_exists(con):
        return {}
    rows = con.rows(
        f"SELECT revision, parents, applied_at, checksum, status, steps_done, ponykit_version, duration_ms"
        f" FROM {TABLE}"
    )
    result: dict[str, VersionRow] = {}
    for rev, parents, at, checksum, status, steps, version, duration in rows:
        if isinstance(at, str):
            at = datetime.datetime.fromisoformat(at)
        result[rev] = VersionRow(
            rev,
            tuple(p for p in parents.split(",") if p),
            at,
            checksum.strip(),
            status,
            int(steps),
            version,
            int(duration),
        )
    return result


def write_row(
    con: MigrationConnection,
    revision: str,
    parents: tuple[str, ...],
    checksum: str,
    status: str,
    steps_done: int,
    duration_ms: int = 0,
) -> None:
    """Insert or replace the row of ``revision`` (in the caller's transaction, if any)."""
    from .. import __version__  # late: ponykit/__init__ may be importing this package

    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    p = con.param
    columns = ("parents", "applied_at", "checksum", "status", "steps_done", "ponykit_version", "duration_ms")
    # One statement: the row is new on an upgrade, and replaced when a partial revision resumes.
    if con.dialect == "sqlite":
        verb, tail = "INSERT OR REPLACE", ""
    elif con.dialect == "postgres":
        verb = "INSERT"
        tail = " ON CONFLICT (revision) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in columns)
    else:
        verb = "INSERT"
        tail = " ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = VALUES({c})" for c in columns)
    values = ", ".join([p] * (len(columns) + 1))
    con.execute(
        f"{verb} INTO {TABLE} (revision, {', '.join(columns)}) VALUES ({values}){tail}",
        (
            revision,
            ",".join(parents),
            now.isoformat(sep=" ") if con.dialect == "sqlite" else now,
            checksum,
            status,
            steps_done,
            __version__,
            duration_ms,
        ),
    )


def delete_row(con: MigrationConnection, revision: str) -> None:
    """Forget ``revision`` (after a downgrade)."""
    con.execute(f"DELETE FROM {TABLE} WHERE revision = {con.param}", (revision,))


def set_progress(con: MigrationConnection, revision: str, status: str, steps_done: int) -> None:
    """Record how far a revision got (status and steps done), keeping the rest of its row."""
    p = con.param
    con.execute(
        f"UPDATE {TABLE} SET status = {p}, steps_done = {p} WHERE revision = {p}",
        (status, steps_done, revision),
    )
