"""The outbox's SQL, per backend: the statements ``publish()``, the relay and the inbox run.

Table and column names are fixed (``_table``) and quoted the way Pony quotes them; values always go as
parameters. On PostgreSQL ``publish()`` is one round trip: the key lock, the row and the ``NOTIFY`` go in
one multi-statement string (psycopg2 sends it in one simple query, in the session's transaction).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from pony.orm import Database

from .. import _pony
from ..errors import UnsupportedDatabase
from ._table import INBOX_TABLE, KEY_TABLE, OUTBOX_TABLE

__all__ = ["CHANNEL", "Dialect", "dialect_of", "read_columns"]

#: The PostgreSQL notification channel ``publish()`` notifies and relays listen on.
CHANNEL = "ponykit_outbox"

_COLUMNS = ("id", "aggregatetype", "aggregateid", "type", "payload", "headers", "created_at", "attempts")
_READ = ("seq", "id", "aggregatetype", "aggregateid", "type", "payload", "headers", "created_at")


@dataclass(frozen=True)
class Dialect:
    """The statements of one backend, with its placeholder (``?`` or ``%s``)."""

    name: str  # 'sqlite', 'postgres', 'mysql'
    mark: str
    outbox: str
    key: str
    inbox: str
    columns: str  # the quoted columns the relay reads, in _READ order

    def marks(self, n: int) -> str:
        return ", ".join([self.mark] * n)

    @property
    def skip_locked(self) -> str:
        # SQLite has no row locks: its relay transaction is BEGIN IMMEDIATE (one writer at a time).
        return "" if self.name == "sqlite" else " FOR UPDATE SKIP LOCKED"

    @functools.cached_property
    def insert_keyed(self) -> str:
        """``publish()``'s statement for a keyed message (built once)."""
        return self.insert_row(keyed=True)

    @functools.cached_property
    def insert_unkeyed(self) -> str:
        """``publish()``'s statement for a message without a key (built once)."""
        return self.insert_row(keyed=False)

    @functools.cached_property
    def lock_key_sql(self) -> str:
        """The key lock statement (built once)."""
        return self.lock_key()

    def insert_row(self, *, keyed: bool) -> str:
        """``publish()``'s statement(s): lock the key (when keyed, not on SQLite), insert, notify (PG)."""
        cols = ", ".join(_quoted(self, c) for c in _COLUMNS)
        insert = f"INSERT INTO {self.outbox} ({cols}) VALUES ({self.marks(len(_COLUMNS))})"
        if self.name == "postgres":
            parts = [self.lock_key(), insert] if keyed else [insert]
            return "; ".join([*parts, f"NOTIFY {CHANNEL}"])
        return insert

    def lock_key(self) -> str:
        """Upsert the key's row, which takes its row lock until the transaction ends."""
        key = _quoted(self, "aggregateid")
        if self.name == "mysql":
            return (
                f"INSERT INTO {self.key} ({key}, pending, turn) VALUES ({self.mark}, 1, 0) "
                "ON DUPLICATE KEY UPDATE pending = GREATEST(pending, 1)"
            )
        # GREATEST: a key blocked behind a dead message (pending = 2) stays blocked.
        return (
            f"INSERT INTO {self.key} ({key}, pending, turn) VALUES ({self.mark}, 1, 0) "
            f"ON CONFLICT ({key}) DO UPDATE SET pending = GREATEST({self.key}.pending, 1)"
        )

    def claim_keys(self, limit: int, *, after: bool) -> str:
        """Claim up to ``limit`` pending keys in (turn, key) order; ``after``: past a (turn, key) given
        as two parameters (the next chunk of one batch: SKIP LOCKED does not skip our own locks)."""
        key = _quoted(self, "aggregateid")
        past = f" AND (turn, {key}) > ({self.mark}, {self.mark})" if after else ""
        where = f"WHERE pending = 1{past} ORDER BY turn, {key} LIMIT {int(limit)}"
        return f"SELECT {key}, turn FROM {self.key} {where}{self.skip_locked}"

    def rows_of_keys(self, n: int, limit: int) -> str:
        key = _quoted(self, "aggregateid")
        return (
            f"SELECT {self.columns} FROM {self.outbox} WHERE {key} IN ({self.marks(n)}) AND sent_at IS NULL "
            "AND dead_at IS NULL "
            f"ORDER BY seq LIMIT {int(limit)}"
        )

    def rows_without_key(self, limit: int) -> str:
        key = _quoted(self, "aggregateid")
        return (
            f"SELECT {self.columns} FROM {self.outbox} WHERE {key} IS NULL AND sent_at IS NULL "
            "AND dead_at IS NULL "
            f"ORDER BY seq LIMIT {int(limit)}{self.skip_locked}"
        )

    def rows_pending(self, limit: int) -> str:
        """SQLite: every pending row in seq order (the relay holds the database's write lock), but none
        of a key that has a dead row (per-key order: the key waits for Relay.requeue())."""
        key = _quoted(self, "aggregateid")
        blocked = (
            f"SELECT {key} FROM {self.outbox} WHERE dead_at IS NOT NULL AND sent_at IS NULL "
            f"AND {key} IS NOT NULL"
        )
        return (
            f"SELECT {self.columns} FROM {self.outbox} WHERE sent_at IS NULL AND dead_at IS NULL "
            f"AND ({key} IS NULL OR {key} NOT IN ({blocked})) ORDER BY seq LIMIT {int(limit)}"
        )

    def mark_sent(self, n: int) -> str:
        return (
            f"UPDATE {self.outbox} SET sent_at = {self.mark}, attempts = attempts + 1 "
            f"WHERE seq IN ({self.marks(n)})"
        )

    def mark_failed(self, n: int) -> str:
        return (
            f"UPDATE {self.outbox} SET attempts = attempts + 1, last_error = {self.mark} "
            f"WHERE seq IN ({self.marks(n)})"
        )

    def set_error(self, n: int) -> str:
        return f"UPDATE {self.outbox} SET last_error = {self.mark} WHERE seq IN ({self.marks(n)})"

    def finish_keys(self, n: int, *, drained: bool) -> str:
        key = _quoted(self, "aggregateid")
        pending = "pending = 0, " if drained else ""
        return f"UPDATE {self.key} SET {pending}turn = {self.mark} WHERE {key} IN ({self.marks(n)})"

    def oldest_pending(self) -> str:
        return (
            f"SELECT created_at FROM {self.outbox} WHERE sent_at IS NULL AND dead_at IS NULL "
            "ORDER BY seq LIMIT 1"
        )

    def attempts_of(self, n: int) -> str:
        return f"SELECT seq, attempts FROM {self.outbox} WHERE seq IN ({self.marks(n)})"

    def mark_dead(self, n: int) -> str:
        return f"UPDATE {self.outbox} SET dead_at = {self.mark} WHERE seq IN ({self.marks(n)})"

    def block_keys(self, n: int) -> str:
        key = _quoted(self, "aggregateid")
        return f"UPDATE {self.key} SET pending = 2 WHERE {key} IN ({self.marks(n)})"

    def dead_rows(self, limit: int) -> str:
        key = _quoted(self, "aggregateid")
        cols = f"id, aggregatetype, {key}, {_quoted(self, 'type')}, attempts, last_error, created_at, dead_at"
        return (
            f"SELECT {cols} FROM {self.outbox} WHERE dead_at IS NOT NULL AND sent_at IS NULL "
            f"ORDER BY seq LIMIT {int(limit)}"
        )

    def keys_of_ids(self, n: int) -> str:
        key = _quoted(self, "aggregateid")
        return (
            f"SELECT DISTINCT {key} FROM {self.outbox} WHERE id IN ({self.marks(n)}) AND {key} IS NOT NULL "
            "AND dead_at IS NOT NULL AND sent_at IS NULL"
        )

    def revive(self, n: int) -> str:
        return (
            f"UPDATE {self.outbox} SET dead_at = NULL, attempts = 0 WHERE id IN ({self.marks(n)}) "
            "AND dead_at IS NOT NULL AND sent_at IS NULL"
        )

    def unblock_keys(self, n: int) -> str:
        """Keys with no dead row left go back to the claim (pending = 1)."""
        key = _quoted(self, "aggregateid")
        return (
            f"UPDATE {self.key} SET pending = 1 WHERE {key} IN ({self.marks(n)}) AND NOT EXISTS "
            f"(SELECT 1 FROM {self.outbox} o WHERE o.{key} = {self.key}.{key} AND o.dead_at IS NOT NULL "
            "AND o.sent_at IS NULL)"
        )

    def prune(self, limit: int) -> str:
        if self.name == "mysql":  # MariaDB: no LIMIT in an IN subquery, but DELETE takes one
            return f"DELETE FROM {self.outbox} WHERE sent_at < {self.mark} ORDER BY seq LIMIT {int(limit)}"
        return (
            f"DELETE FROM {self.outbox} WHERE seq IN (SELECT seq FROM {self.outbox} "
            f"WHERE sent_at < {self.mark} ORDER BY seq LIMIT {int(limit)})"
        )

    def prune_keys(self, limit: int) -> str:
        """Lock idle keys (nothing pending, no publisher holding them) for deletion."""
        key = _quoted(self, "aggregateid")
        return f"SELECT {key} FROM {self.key} WHERE pending = 0 LIMIT {int(limit)}{self.skip_locked}"

    def delete_keys(self, n: int) -> str:
        key = _quoted(self, "aggregateid")
        return f"DELETE FROM {self.key} WHERE {key} IN ({self.marks(n)}) AND pending = 0"

    def inbox_insert(self) -> str:
        cols = f"{_quoted(self, 'message_id')}, processed_at"
        values = f"VALUES ({self.mark}, {self.mark})"
        if self.name == "postgres":
            return f"INSERT INTO {self.inbox} ({cols}) {values} ON CONFLICT DO NOTHING"
        if self.name == "mysql":
            return f"INSERT IGNORE INTO {self.inbox} ({cols}) {values}"
        return f"INSERT OR IGNORE INTO {self.inbox} ({cols}) {values}"


def _quoted(d: Dialect, name: str) -> str:
    if d.name == "mysql":
        return f"`{name}`"
    return f'"{name}"'


_dialects: weakref.WeakKeyDictionary[Database, Dialect] = weakref.WeakKeyDictionary()


def dialect_of(db: Database) -> Dialect:
    """The :class:`Dialect` of ``db`` (SQLite, PostgreSQL or MariaDB/MySQL), made once per Database."""
    found = _dialects.get(db)
    if found is None:
        found = _dialects[db] = _make(db)
    return found


def _make(db: Database) -> Dialect:
    name = _pony.dialect(db)
    if name not in ("sqlite", "postgres", "mysql"):
        raise UnsupportedDatabase(
            f"the outbox supports SQLite, PostgreSQL and MariaDB/MySQL; the {_pony.describe_database(db)} "
            f"is {name}"
        )
    mark = "?" if _pony.paramstyle(db) == "qmark" else "%s"
    probe = Dialect(name, mark, "", "", "", "")
    return Dialect(
        name=name,
        mark=mark,
        outbox=_pony.quote_name(db, OUTBOX_TABLE),
        key=_pony.quote_name(db, KEY_TABLE),
        inbox=_pony.quote_name(db, INBOX_TABLE),
        columns=", ".join(_quoted(probe, c) for c in _READ),
    )


def read_columns() -> Sequence[str]:
    """The columns the relay's SELECTs return, in order."""
    return _READ
