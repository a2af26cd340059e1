"""Poison messages: find the message a broker keeps rejecting, set it aside as dead, list and requeue.

When a batch fails, the relay cannot tell a broker that is down from one that rejects one message of the
batch. So, in the same transaction (its key claims still held), it *probes*: it publishes the batch's rows
one at a time in ``seq`` order, skipping the later rows of a key whose row failed (per-key order). Rows
the broker confirms are marked sent. Only when the broker confirmed at least one message in the probe
(it is up) do the rows that failed alone count as rejected: a rejected row whose ``attempts`` reached
``max_attempts`` is set aside (``dead_at``), logged at ERROR (id, topic, key: never the payload) and its
key is blocked (``ponykit_outbox_key.pending = 2``; on SQLite the relay skips keys that have a dead row):
the key's later messages wait until :meth:`Relay.requeue` puts the dead one back, so they never overtake
it. When nothing went through in the probe, the broker looks down: nothing is set aside.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pony.orm import Database

from .. import _pony
from ._message import Message, Publisher
from ._publish import db_value, utcnow
from ._sql import Dialect

__all__ = ["DeadMessage", "Probe", "list_dead", "probe", "requeue"]

log = logging.getLogger("ponykit.outbox")

#: Failures in a row, before any confirmation, after which the probe stops: the broker looks down.
PROBE_FAILURES = 3
_ERROR_TEXT = 1000


@dataclass(frozen=True)
class DeadMessage:
    """An outbox message the relay set aside after ``max_attempts`` rejections (no payload: read the
    row with ``outbox_entity(db)`` when you need it)."""

    id: str
    topic: str
    key: str | None
    type: str
    attempts: int
    last_error: str | None
    created_at: datetime | None
    dead_at: datetime | None


@dataclass(frozen=True)
class Probe:
    """What a probe did: rows confirmed and marked sent (seqs), and how many were set aside."""

    sent: list[int]
    dead: int


def probe(
    db: Database,
    dialect: Dialect,
    publisher: Publisher,
    rows: Sequence[Any],
    messages: Sequence[Message],
    max_attempts: int,
) -> Probe:
    """Publish the failed batch's rows one at a time (see the module); run in the batch's transaction,
    after the batch's rows had their failed attempt counted. Only once a row has ``max_attempts``: a
    broker that is down costs one try per batch until then, and at most ``PROBE_FAILURES`` more after."""
    seqs = [row[0] for row in rows]
    counted = dict(_pony.execute_in_session(db, dialect.attempts_of(len(seqs)), tuple(seqs)).fetchall())
    if max((int(n) for n in counted.values()), default=0) < max_attempts:
        return Probe([], 0)
    blocked: set[str] = set()
    sent: list[int] = []
    failed: dict[int, tuple[Message, str]] = {}
    for row, message in zip(rows, messages, strict=True):
        if message.key is not None and message.key in blocked:
            continue  # a row of this key failed: later ones must not overtake it
        try:
            publisher.publish([message])
        except Exception as exc:  # noqa: BLE001 - a rejection, or the broker is down: decided below
            failed[row[0]] = (message, f"{type(exc).__name__}: {exc}"[:_ERROR_TEXT])
            if message.key is not None:
                blocked.add(message.key)
            if not sent and len(failed) >= PROBE_FAILURES:
                break
        else:
            sent.append(row[0])
    if sent:
        execute(db, dialect.mark_sent(len(sent)), (db_value(dialect.name, utcnow()), *sent))
    if not sent or not failed:
        return Probe(sent, 0)
    # The broker is up (it confirmed other messages): the failed rows were rejected.
    seqs = list(failed)
    for seq, (_message, text) in failed.items():
        execute(db, dialect.set_error(1), (text, seq))
    attempts = dict(_pony.execute_in_session(db, dialect.attempts_of(len(seqs)), tuple(seqs)).fetchall())
    dead = [seq for seq in seqs if int(attempts.get(seq, 0)) >= max_attempts]
    if not dead:
        return Probe(sent, 0)
    execute(db, dialect.mark_dead(len(dead)), (db_value(dialect.name, utcnow()), *dead))
    keys = sorted({key for seq in dead if (key := failed[seq][0].key) is not None})
    if keys and dialect.name != "sqlite":
        execute(db, dialect.block_keys(len(keys)), tuple(keys))
    for seq in dead:
        message = failed[seq][0]
        log.error(
            "ponykit.outbox: message %s (topic %r, key %r) set aside as dead after %d attempts; "
            "its key is blocked until Relay.requeue()",
            message.id,
            message.topic,
            message.key,
            int(attempts.get(seq, 0)),
            extra={"message_id": message.id, "topic": message.topic, "key": message.key},
        )
    return Probe(sent, len(dead))


def list_dead(db: Database, dialect: Dialect, limit: int) -> list[DeadMessage]:
    """The dead messages, oldest first (at most ``limit``); run in a transaction."""
    found = []
    for row in _pony.execute_in_session(db, dialect.dead_rows(limit), ()).fetchall():
        id_, topic, key, type_, attempts, last_error, created_at, dead_at = row
        found.append(
            DeadMessage(
                str(id_),
                str(topic),
                key,
                str(type_),
                int(attempts),
                last_error,
                _time(created_at),
                _time(dead_at),
            )
        )
    return found


def requeue(db: Database, dialect: Dialect, ids: Sequence[str]) -> int:
    """Put dead messages back (``attempts`` = 0) and unblock their keys; run in a transaction."""
    if not ids:
        return 0
    keys = [r[0] for r in _pony.execute_in_session(db, dialect.keys_of_ids(len(ids)), tuple(ids)).fetchall()]
    cursor = _pony.execute_in_session(db, dialect.revive(len(ids)), tuple(ids))
    if keys and dialect.name != "sqlite":
        execute(db, dialect.unblock_keys(len(keys)), tuple(keys))
    return max(int(cursor.rowcount or 0), 0)


def _time(value: Any) -> datetime | None:
    if isinstance(value, str):  # SQLite: Pony's text form
        return datetime.fromisoformat(value)
    return value if isinstance(value, datetime) else None


def execute(db: Database, sql: str, arguments: tuple[Any, ...]) -> None:
    _pony.execute_in_session(db, sql, arguments)
