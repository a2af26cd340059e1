"""PostgreSQL wake-up: the relay LISTENs on the channel ``publish()`` NOTIFYs.

A notification issued in a transaction is delivered when (and only if) it commits, so a relay waiting on
the channel wakes up as soon as a message can be published, instead of polling. The listener has its
own autocommit connection (not Pony's pooled one). If it cannot connect or its connection breaks, the
relay falls back to polling every ``poll_interval`` and tries again later: notifications are only a
shortcut, never the source of truth (the table is).
"""

from __future__ import annotations

import contextlib
import logging
import select
import time
from typing import Any

from pony.orm import Database

from .. import _pony
from ._sql import CHANNEL

__all__ = ["Listener"]

log = logging.getLogger("ponykit.outbox")

_RETRY_AFTER = 5.0  # seconds before a failed listener connection is tried again


class Listener:
    """A ``LISTEN`` connection for one relay (PostgreSQL)."""

    def __init__(self, db: Database, name: str) -> None:
        self.db = db
        self.name = name
        self._conn: Any = None
        self._failed_at = 0.0

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a notification; True if one came (or may have come)."""
        fresh = self._conn is None
        conn = self._connection()
        if conn is None:
            time.sleep(timeout)
            return False
        if fresh:  # rows committed before LISTEN began sent no notification this connection sees
            return True
        try:
            if conn.notifies:
                conn.notifies.clear()
                return True
            ready, _, _ = select.select([conn], [], [], timeout)
            if not ready:
                return False
            conn.poll()
            if not conn.notifies:
                # Readable without a notification: the server may have ended the session (psycopg2's
                # poll() swallows the FATAL message). A statement raises if the connection is gone.
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
            got = bool(conn.notifies)
            conn.notifies.clear()
            return got
        except Exception as exc:  # noqa: BLE001 - the listener is a shortcut: fall back to polling
            log.warning(
                "ponykit.outbox relay %s: the LISTEN connection failed (%s); polling until it is back",
                self.name,
                type(exc).__name__,
                extra={"relay": self.name},
            )
            self.close()
            self._failed_at = time.monotonic()
            return True  # something may have been missed while it was failing: look at the table

    def _connection(self) -> Any:
        if self._conn is not None:
            return self._conn
        if self._failed_at and time.monotonic() - self._failed_at < _RETRY_AFTER:
            return None
        try:
            conn = _pony.open_side_connection(self.db)
            with conn.cursor() as cur:
                cur.execute(f"LISTEN {CHANNEL}")
        except Exception as exc:  # noqa: BLE001
            log.warning(
                "ponykit.outbox relay %s: cannot LISTEN on the %s (%s); polling instead",
                self.name,
                _pony.describe_database(self.db),
                type(exc).__name__,
                extra={"relay": self.name},
            )
            self._failed_at = time.monotonic()
            return None
        self._conn = conn
        self._failed_at = 0.0
        return conn

    def close(self) -> None:
        """Close the listening connection (it may be called more than once)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to release
                conn.close()
