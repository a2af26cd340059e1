"""Running units on the migration connection: checks, statements, RunPython on historical models, and
the driver's errors turned into MigrationError / UnsafeMigration / MigrationLockTimeout."""

from __future__ import annotations

import math
from typing import Any

from ..errors import MigrationError, MigrationLockTimeout, UnsafeMigration
from ._connect import MigrationConnection
from ._units import Unit

__all__ = ["run_unit", "server_version", "set_timeouts"]


def server_version(con: MigrationConnection) -> Any:
    """The server version as Pony's provider records it (PostgreSQL: 150004; MariaDB: (10, 11, 9))."""
    # The drivers keep what the server said at connect time: no round trip.
    if con.dialect == "postgres":
        return int(con.connection.server_version)
    if con.dialect == "mysql":
        text = str(con.connection.get_server_info())
        # MariaDB's handshake reports "5.5.5-10.11.9-MariaDB...": the real version follows the prefix.
        text = text.removeprefix("5.5.5-").split("-")[0]
        return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())
    return None


def set_timeouts(con: MigrationConnection, statement_lock_timeout: float) -> None:
    """How long one statement waits for a table lock (an ALTER behind a long transaction fails fast):
    PostgreSQL ``lock_timeout``, MariaDB ``lock_wait_timeout`` (whole seconds) and
    ``innodb_lock_wait_timeout``. Not a statement timeout: a long backfill may take its time."""
    if statement_lock_timeout <= 0:
        return
    if con.dialect == "postgres":
        con.execute(f"SET lock_timeout = {int(statement_lock_timeout * 1000)}")
    elif con.dialect == "mysql":
        seconds = max(1, math.ceil(statement_lock_timeout))
        con.execute(f"SET SESSION lock_wait_timeout = {seconds}")
        con.execute(f"SET SESSION innodb_lock_wait_timeout = {seconds}")


def _is_lock_timeout(exc: BaseException) -> bool:
    text = str(exc).lower()
    code = getattr(exc, "pgcode", None)
    args = list(getattr(exc, "args", ()))
    return (
        code == "55P03"
        or "lock timeout" in text
        or "lock wait timeout" in text
        or (bool(args) and args[0] in (1205, 3572))
    )


def translate(exc: Exception, revision: str, unit: Unit, index: int, total: int, statement: str) -> Exception:
    """A MigrationError (or lock timeout) naming the revision, the step and the statement."""
    where = f"revision {revision}, step {index + 1}/{total} ({unit.description})"
    shown = statement if len(statement) <= 300 else statement[:300] + " ..."
    if _is_lock_timeout(exc):
        return MigrationLockTimeout(
            f"{where}: a table lock was not granted in time for {shown!r}: {exc}. A long transaction holds "
            "the table: end it, or raise statement_lock_timeout"
        )
    if isinstance(exc, MigrationError):
        return exc
    text = " ".join(str(exc).split())  # one line: drivers add LINE/caret lines
    return MigrationError(f"{where} failed: {type(exc).__name__}: {text} (statement: {shown})")


def _run_checks(con: MigrationConnection, unit: Unit, revision: str) -> None:
    for check in unit.checks:
        rows = con.rows(check.sql)
        bad = bool(rows) and not (len(rows) == 1 and len(rows[0]) == 1 and not rows[0][0])
        if bad:
            raise UnsafeMigration(f"revision {revision}: {check.message} (check: {check.sql})")


def _run_python(con: MigrationConnection, unit: Unit) -> None:
    from pony.orm import db_session

    from ._historical import bind_on_connection

    assert unit.function is not None
    database = bind_on_connection(unit.snapshot, con, keys=con.keys)
    with db_session:
        unit.function(database)
        database.commit()  # flush; the borrowed connection's commit does nothing: the runner commits


def run_unit(con: MigrationConnection, unit: Unit, revision: str, index: int, total: int) -> None:
    """Run one unit: its checks, then its statements or function."""
    statement = ""
    try:
        _run_checks(con, unit, revision)
        if unit.kind == "python":
            statement = f"RunPython {unit.description}"
            _run_python(con, unit)
            return
        for statement in unit.statements:
            con.execute(statement)
    except Exception as exc:
        raise translate(exc, revision, unit, index, total, statement) from exc
