"""Transaction characteristics: isolation level, read-only, deferrable and a statement timeout per backend.

``transaction()`` stores a :class:`Mode` on the session's transaction state; the ``set_transaction_mode``
wrapper of ``_hooks`` applies it each time Pony starts a transaction on that session, before the first
statement. What is set for the transaction only (PostgreSQL ``SET TRANSACTION``/``SET LOCAL``, MySQL
``SET TRANSACTION`` without ``SESSION``) ends with it; what has to be set on the connection (MySQL's
timeouts, SQLite's pragmas) is put back before the connection returns to Pony's pool, so the next
``db_session`` on it starts from the server's defaults.

What each level means on SQLite: every transaction ponykit opens there is ``BEGIN IMMEDIATE`` (Pony also
serializes writers in the process), so transactions are serializable whatever level is asked for.
``read_only`` sets ``PRAGMA query_only``; ``timeout`` sets ``PRAGMA busy_timeout`` (how long to wait for
a lock another process holds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ..errors import OptionError

__all__ = ["ISOLATION_LEVELS", "Isolation", "Mode"]

Isolation = Literal["read_committed", "repeatable_read", "serializable"]
ISOLATION_LEVELS: tuple[str, ...] = ("read_committed", "repeatable_read", "serializable")


@dataclass(frozen=True)
class Mode:
    """What one ``transaction()`` asks of every database transaction it runs."""

    isolation: Isolation | None = None
    read_only: bool = False
    deferrable: bool = False
    timeout: float | None = None  # seconds per statement

    def __post_init__(self) -> None:
        if self.isolation is not None and self.isolation not in ISOLATION_LEVELS:
            raise OptionError(
                f"transaction(isolation=...) expects one of {', '.join(map(repr, ISOLATION_LEVELS))} or None "
                f"(the server's default), got {self.isolation!r}"
            )
        for name in ("read_only", "deferrable"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"transaction({name}=...) takes True or False, got {getattr(self, name)!r}")
        timeout = self.timeout
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
        ):
            raise OptionError(
                f"transaction(timeout=...) takes seconds > 0 (a statement running longer is cancelled) "
                f"or None, got {timeout!r}"
            )

    @property
    def is_default(self) -> bool:
        """True when nothing differs from the server's defaults (no statement needed)."""
        return self.isolation is None and not self.read_only and self.timeout is None

    def begin_statements(self, dialect: str, *, mariadb: bool = False) -> tuple[list[str], list[str]]:
        """The statements that set this mode up at the start of a transaction, and those that undo what
        outlives it on the connection (run before the connection goes back to the pool)."""
        if dialect in ("postgres", "cockroach"):
            return self._postgres(), []
        if dialect == "mysql":
            return self._mysql(mariadb)
        if dialect == "sqlite":
            return self._sqlite()
        return [], []

    def _level(self) -> str:
        return (self.isolation or "").replace("_", " ").upper()

    def _postgres(self) -> list[str]:
        parts = []
        if self.isolation:
            parts.append(f"ISOLATION LEVEL {self._level()}")
        if self.read_only:
            parts.append("READ ONLY")
        if self.deferrable and self.read_only and self.isolation == "serializable":
            parts.append("DEFERRABLE")  # means something only for a serializable read-only transaction
        out = [f"SET TRANSACTION {' '.join(parts)}"] if parts else []
        if self.timeout is not None:
            out.append(f"SET LOCAL statement_timeout = {max(1, math.ceil(self.timeout * 1000))}")
        return out

    def _mysql(self, mariadb: bool) -> tuple[list[str], list[str]]:
        # Without SESSION, SET TRANSACTION applies to the next transaction only: nothing to undo.
        parts = []
        if self.isolation:
            parts.append(f"ISOLATION LEVEL {self._level()}")
        if self.read_only:
            parts.append("READ ONLY")
        begin = [f"SET TRANSACTION {', '.join(parts)}"] if parts else []
        restore: list[str] = []
        if self.timeout is not None:
            lock_wait = max(1, math.ceil(self.timeout))
            if mariadb:
                begin.append(f"SET SESSION max_statement_time = {self.timeout:.3f}")
                restore.append("SET SESSION max_statement_time = DEFAULT")
            else:
                begin.append(f"SET SESSION max_execution_time = {max(1, math.ceil(self.timeout * 1000))}")
                restore.append("SET SESSION max_execution_time = DEFAULT")
            begin.append(f"SET SESSION innodb_lock_wait_timeout = {lock_wait}")
            restore.append("SET SESSION innodb_lock_wait_timeout = DEFAULT")
        return begin, restore

    def _sqlite(self) -> tuple[list[str], list[str]]:
        begin: list[str] = []
        restore: list[str] = []
        if self.read_only:
            begin.append("PRAGMA query_only = 1")
            restore.append("PRAGMA query_only = 0")
        if self.timeout is not None:
            # The connection's own value is read and put back by the caller (apply_mode in _hooks).
            begin.append(f"PRAGMA busy_timeout = {max(1, math.ceil(self.timeout * 1000))}")
        return begin, restore
