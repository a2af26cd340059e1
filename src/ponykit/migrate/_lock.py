"""The migration lock: one runner at a time per database (schema on PostgreSQL).

- PostgreSQL: a session ``pg_advisory_lock`` keyed by ``hashtext('ponykit:migrate:' || database || ':' ||
  schema)``, polled with ``pg_try_advisory_lock`` until the timeout, on the connection that runs the DDL.
  A session lock survives the migrations' COMMITs (``pg_advisory_xact_lock`` would not); it needs a direct
  connection (PgBouncer in transaction pooling breaks session locks). It dies with the session: a holder
  killed mid-statement is noticed within a second (``client_connection_check_interval``, PostgreSQL 14+).
- MariaDB: ``GET_LOCK('ponykit:migrate:<database>', timeout)``, which DDL's implicit commits do not release.
- SQLite: each migration's own ``BEGIN IMMEDIATE`` (one writer per file), with the busy timeout.

Every holder re-reads the version table after taking the lock: what another runner applied meanwhile is
skipped. A timeout raises :class:`MigrationLockTimeout` naming who holds the lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import MigrationLockTimeout
from ._connect import MigrationConnection

__all__ = ["lock_name", "migration_lock", "sqlite_begin"]

_POLL = 0.05  # seconds between pg_try_advisory_lock attempts


def lock_name(con: MigrationConnection) -> str:
    """The MariaDB lock name (at most 64 characters: long database names are hashed)."""
    database = str(con.scalar("SELECT DATABASE()"))
    name = f"ponykit:migrate:{database}"
    if len(name) > 64:
        name = "ponykit:migrate:" + hashlib.sha256(database.encode()).hexdigest()[:40]
    return name


def _pg_try_first(con: MigrationConnection) -> tuple[int, bool]:
    """The lock's key (per database and schema) and a first attempt, in one round trip."""
    key, taken = con.rows(
        "SELECT k, pg_try_advisory_lock(k) FROM"
        " (SELECT hashtext('ponykit:migrate:' || current_database() || ':' || current_schema()) AS k) s"
    )[0]
    return int(key), bool(taken)


def _pg_holder(con: MigrationConnection, key: int) -> str:
    rows = con.rows(
        "SELECT a.pid, a.usename, a.application_name, a.client_addr, a.state, a.backend_start"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objid = %s::bigint::oid"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (key & 0xFFFFFFFF,),
    )
    if not rows:
        return "another session (it released the lock meanwhile)"
    pid, user, app, addr, _state, started = rows[0]
    return (
        f"backend pid {pid} (user {user}, application {app or '-'}, client {addr or 'local'}, "
        f"since {started})"
    )


def _mysql_holder(con: MigrationConnection, name: str) -> str:
    holder = con.scalar("SELECT IS_USED_LOCK(%s)", (name,))
    if holder is None:
        return "another session (it released the lock meanwhile)"
    rows = con.rows(
        "SELECT user, host, command, time FROM information_schema.processlist WHERE id = %s", (holder,)
    )
    if not rows:
        return f"connection id {holder}"
    user, host, command, seconds = rows[0]
    return f"connection id {holder} (user {user} from {host}, {command} for {seconds} s)"


@contextmanager
def migration_lock(con: MigrationConnection, timeout: float) -> Iterator[None]:
    """Hold the migration lock on ``con`` for the block (SQLite: set the busy timeout; the runner's
    ``BEGIN IMMEDIATE`` is the lock). Raises :class:`MigrationLockTimeout` after ``timeout`` seconds."""
    if con.dialect == "sqlite":
        con.execute(f"PRAGMA busy_timeout = {max(int(timeout * 1000), 0)}")
        yield
        return
    if con.dialect == "postgres":
        if int(con.connection.server_version) >= 140000:
            # A holder killed while its backend runs a long statement (an ALTER, a backfill) would keep
            # the lock until the statement ends: the server polls the client socket and ends the session.
            con.execute("SET client_connection_check_interval = 1000")
        key, taken = _pg_try_first(con)
        deadline = time.monotonic() + timeout
        while not taken and not con.scalar("SELECT pg_try_advisory_lock(%s)", (key,)):
            if time.monotonic() >= deadline:
                raise MigrationLockTimeout(
                    f"the migration lock of this database/schema is held by {_pg_holder(con, key)}; "
                    f"waited {timeout:g} s. Another upgrade is running: wait for it, or raise --lock-timeout"
                )
            time.sleep(_POLL)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # a broken connection drops the session lock itself
                con.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return
    name = lock_name(con)
    if con.scalar("SELECT GET_LOCK(%s, %s)", (name, timeout)) != 1:
        raise MigrationLockTimeout(
            f"the migration lock {name!r} is held by {_mysql_holder(con, name)}; waited {timeout:g} s. "
            "Another upgrade is running: wait for it, or raise --lock-timeout"
        )
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # a broken connection drops the lock itself
            con.execute("SELECT RELEASE_LOCK(%s)", (name,))


def sqlite_begin(con: MigrationConnection, timeout: float) -> None:
    """``BEGIN IMMEDIATE`` on SQLite: the write lock of the file, waited for up to the busy timeout."""
    started = time.monotonic()
    try:
        con.execute("BEGIN IMMEDIATE")
    except Exception as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise MigrationLockTimeout(
                f"the SQLite database is locked by another connection's write transaction; waited "
                f"{time.monotonic() - started:.1f} s (lock timeout {timeout:g} s). Another upgrade or a "
                "long write is running: wait for it, or raise --lock-timeout"
            ) from exc
        raise
