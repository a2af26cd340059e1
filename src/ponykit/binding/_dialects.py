"""Replication positions per database: how the router reads a commit's position on the primary, what a
replica has applied, and how a pinned reader waits for it.

- **PostgreSQL** (streaming replicas): a position is the WAL LSN as an int. The pin after a commit is
  ``pg_current_wal_lsn()``; a replica applied it once ``pg_last_wal_replay_lsn()`` reached it, which a
  pinned reader polls (``poll``, doubling up to 50 ms) for up to ``pin_wait``.
- **MariaDB** (GTID replication, ``MASTER_USE_GTID=slave_pos``): a position is a :class:`Gtid`. The pin
  after a commit is ``@@gtid_binlog_pos``; a replica applied it once ``@@gtid_slave_pos`` covers it in
  every domain, which a pinned reader waits for with one ``MASTER_GTID_WAIT(pin, pin_wait)`` (no polling).
  Health comes from ``SHOW ALL SLAVES STATUS``: a replica whose SQL thread is not running is lagging
  (it applies nothing), and ``Seconds_Behind_Master`` bounds the lag.

Every query runs outside a transaction on a connection no session uses yet (or right after a commit):
PostgreSQL's in autocommit (no BEGIN), MariaDB's without touching a table (no read view, no lock).
"""

from __future__ import annotations

import time
from typing import Any

from ._gtid import Gtid, Position, parse_gtid
from ._health import Health
from ._pins import format_lsn, parse_lsn

__all__ = ["Dialect", "MariadbPositions", "PostgresPositions", "dialect_for"]

_STATUS_SQL = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, pg_last_wal_receive_lsn()::text, "
    "CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END, "
    # the age of the last replayed commit, meaningful only while received WAL waits to be replayed
    "EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8"
)
_REPLAY_SQL = "SELECT COALESCE(pg_last_wal_replay_lsn(), '0/0')::text, pg_is_in_recovery()"
_COMMIT_LSN_SQL = "SELECT pg_current_wal_lsn()::text"


class Dialect:
    """What the router needs of a database's replication (the module docstring has the two kinds)."""

    name = ""

    def is_position(self, pin: object) -> bool:
        """True if ``pin`` is a position of this kind (a token may carry another kind: ignored)."""
        raise NotImplementedError

    def format(self, position: Position) -> str:
        """The server's own text of ``position`` (``replica_status``)."""
        raise NotImplementedError

    def commit_position(self, connection: Any) -> Position:
        """The position of the commit just made on ``connection`` (the primary)."""
        raise NotImplementedError

    def observe(self, health: Health, con: Any) -> None:
        """Ask the replica behind ``con`` how far it applied and how far behind it is; tell ``health``."""
        raise NotImplementedError

    def wait(self, health: Health, con: Any, pin: Position, pin_wait: float, poll: float) -> bool:
        """Wait up to ``pin_wait`` seconds until the replica behind ``con`` applied ``pin``."""
        raise NotImplementedError


class PostgresPositions(Dialect):
    """PostgreSQL streaming replicas: WAL LSNs (the module docstring)."""

    name = "postgres"

    def is_position(self, pin: object) -> bool:
        return isinstance(pin, int)

    def format(self, position: Position) -> str:
        assert isinstance(position, int)
        return format_lsn(position)

    def _query(self, con: Any, sql: str) -> Any:
        # Outside any transaction (Pony sets the mode it wants right after): one round trip, no BEGIN.
        if not con.autocommit:
            con.autocommit = True
        cursor = con.cursor()
        try:
            cursor.execute(sql)
            return cursor.fetchone()
        finally:
            cursor.close()

    def commit_position(self, connection: Any) -> Position:
        autocommit = connection.autocommit
        connection.autocommit = True
        try:
            cursor = connection.cursor()
            cursor.execute(_COMMIT_LSN_SQL)
            lsn = parse_lsn(cursor.fetchone()[0])
            cursor.close()
        finally:
            connection.autocommit = autocommit
        return lsn

    def observe(self, health: Health, con: Any) -> None:
        in_recovery, replayed, received, current, age = self._query(con, _STATUS_SQL)
        now = time.monotonic()
        if not in_recovery:  # not a standby (promoted, or the primary itself): everything is there
            health.observed(parse_lsn(current), None, now)
            return
        replayed_at = parse_lsn(replayed) if replayed else None
        received_at = parse_lsn(received) if received else None
        # On an idle primary the last replayed commit gets old without any lag: its age counts only while
        # the replica has received WAL it has not replayed yet.
        behind = replayed_at is not None and received_at is not None and received_at > replayed_at
        health.observed(replayed_at, received_at, now, float(age) if behind and age is not None else None)

    def wait(self, health: Health, con: Any, pin: Position, pin_wait: float, poll: float) -> bool:
        deadline = time.monotonic() + pin_wait
        delay = poll
        while True:
            replayed, in_recovery = self._query(con, _REPLAY_SQL)
            now = time.monotonic()
            if not in_recovery:
                self.observe(health, con)
            else:
                health.observed(parse_lsn(replayed), None, now)
            if health.reached(pin):
                return True
            left = deadline - now
            if left <= 0:
                return False
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)


class MariadbPositions(Dialect):
    """MariaDB GTID replicas (the module docstring)."""

    name = "mysql"

    def is_position(self, pin: object) -> bool:
        return isinstance(pin, Gtid)

    def format(self, position: Position) -> str:
        return str(position) if isinstance(position, Gtid) else ""

    def _rows(self, con: Any, sql: str, args: tuple[Any, ...] | None = None) -> list[dict[str, Any]]:
        # No table is read: no transaction state (read view, locks) is left on the connection.
        cursor = con.cursor()
        try:
            cursor.execute(sql, args)
            names = [d[0] for d in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def commit_position(self, connection: Any) -> Position:
        rows = self._rows(connection, "SELECT @@gtid_binlog_pos AS pos")
        return parse_gtid(rows[0]["pos"])

    def observe(self, health: Health, con: Any) -> None:
        rows = self._rows(con, "SHOW ALL SLAVES STATUS")
        now = time.monotonic()
        status = next((r for r in rows if not r.get("Connection_name")), rows[0] if rows else None)
        if status is None:  # not a replica (promoted, or the primary itself): everything is there
            current = self._rows(con, "SELECT @@gtid_current_pos AS pos")[0]["pos"]
            health.observed(parse_gtid(current), None, now)
            return
        replayed = parse_gtid(status.get("Gtid_Slave_Pos"))
        received = parse_gtid(status.get("Gtid_IO_Pos"))
        if status.get("Slave_SQL_Running") != "Yes":
            # Its SQL thread applies nothing (stopped, or an error): it can only fall further behind.
            health.observed(replayed, received, now, float("inf"))
            return
        behind = status.get("Seconds_Behind_Master")
        health.observed(replayed, received, now, float(behind) if behind is not None else None)

    def wait(self, health: Health, con: Any, pin: Position, pin_wait: float, poll: float) -> bool:
        rows = self._rows(con, "SELECT MASTER_GTID_WAIT(%s, %s) AS waited", (str(pin), float(pin_wait)))
        if rows[0]["waited"] != 0:  # -1: timed out (NULL: the server could not wait for it)
            return False
        health.observed(pin, None, time.monotonic())
        return True


def dialect_for(provider: str) -> Dialect:
    """The positions of Pony's ``provider`` (``postgres`` or ``mysql``)."""
    return MariadbPositions() if provider == "mysql" else PostgresPositions()
