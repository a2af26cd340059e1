"""One relay batch: claim keys, read their pending rows, publish them, mark them sent, in one transaction.

PostgreSQL and MariaDB (READ COMMITTED, so each statement sees what other relays committed):

1. ``SELECT aggregateid FROM ponykit_outbox_key WHERE pending = 1 ORDER BY turn LIMIT n FOR UPDATE SKIP
   LOCKED`` claims keys no other relay (and no open publishing transaction) holds;
2. the pending rows of those keys, in ``seq`` order (no uncommitted row of a claimed key can exist: a
   publisher takes the key's lock before writing its row, and commits before releasing it);
3. rows without a key, each claimed with ``FOR UPDATE SKIP LOCKED`` on the row itself;
4. ``publisher.publish(messages)``; only when it returned (the broker confirmed) the rows get ``sent_at``;
5. the claimed keys get ``pending = 0`` when all their rows went out, and ``turn`` = the last ``seq``
   published, so the next claims serve other keys first; COMMIT releases the claims.

A relay that dies (or whose connection is killed) mid-batch has its transaction rolled back by the
server: its claims are released and its rows, still pending, go out with the next relay's batch. SQLite
has no row locks: the batch runs in ``BEGIN IMMEDIATE`` (one relay at a time) and reads pending rows in
``seq`` order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
from pony.orm import Database

from .. import _pony
from ..transactions import transaction
from ._dead import probe
from ._message import Message, Publisher
from ._publish import db_value, utcnow
from ._sql import Dialect

__all__ = ["BatchResult", "run_batch"]

_ERROR_TEXT = 1000  # the last_error column
#: The first claim of a batch takes ``batch_size // CHUNK_DIVISOR`` keys (25 of 500): several relays
#: share 100 keys instead of the first one taking them all (benchmarks/test_outbox.py, 4 relays).
CHUNK_DIVISOR = 20
MAX_CHUNKS = 8  # claim rounds per batch at most (two statements each)


@dataclass(frozen=True)
class BatchResult:
    """What one batch did: messages published and marked sent, and the creation time of the newest."""

    sent: int
    newest: datetime | None = None
    error: BaseException | None = None


def run_batch(
    db: Database,
    dialect: Dialect,
    publisher: Publisher,
    limit: int,
    null_first: bool,
    max_attempts: int | None = None,
) -> BatchResult:
    """Publish one batch of at most ``limit`` committed, pending messages (see the module)."""
    with transaction(isolation="read_committed", db=db):
        if dialect.name == "sqlite":
            rows = _fetch(db, dialect.rows_pending(limit), ())
            keys: list[str] = []
            keyed_full = False
        else:
            rows, keys, keyed_full = _claim(db, dialect, limit, null_first)
        if not rows:
            if keys:  # claimed keys whose flag was stale: nothing pending after all
                _finish_keys(db, dialect, keys, [], drained=True, turn=0)
            return BatchResult(0)
        rows.sort(key=lambda row: row[0])
        messages = [_message(dialect, row) for row in rows]
        seqs = [row[0] for row in rows]
        try:
            publisher.publish(messages)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the rows pending, counted
            text = f"{type(exc).__name__}: {exc}"[:_ERROR_TEXT]
            _execute(db, dialect.mark_failed(len(seqs)), (text, *seqs))
            error: BaseException | None = exc
            if max_attempts is not None:
                # One message rejected, or the broker down? Publish one at a time to find out.
                found = probe(db, dialect, publisher, rows, messages, max_attempts)
                if found.sent:
                    done = set(found.sent)
                    served = [row[3] for row in rows if row[3] is not None and row[0] in done]
                    if served:  # only the turn moves: a key may still have rows waiting
                        _finish_keys(db, dialect, keys, served, drained=False, turn=max(done))
                    messages = [m for row, m in zip(rows, messages, strict=True) if row[0] in done]
                    error = None
        else:
            error = None
            _execute(db, dialect.mark_sent(len(seqs)), (db_value(dialect.name, utcnow()), *seqs))
            if keys:
                served = [row[3] for row in rows if row[3] is not None]
                _finish_keys(db, dialect, keys, served, drained=not keyed_full, turn=seqs[-1])
    if error is not None:
        return BatchResult(0, error=error)
    newest = max((m.created_at for m in messages if m.created_at is not None), default=None)
    return BatchResult(len(messages), newest)


def _claim(db: Database, dialect: Dialect, limit: int, null_first: bool) -> tuple[list[Any], list[str], bool]:
    """Claim keys and rows without a key: (rows, claimed keys, whether the keyed rows hit their limit)."""
    rows: list[Any] = []
    keys: list[str] = []
    keyed_full = False
    if null_first:
        rows = _fetch(db, dialect.rows_without_key(limit), ())
    room = limit - len(rows)
    if room > 0:
        keys, keyed = _claim_keys(db, dialect, room)
        keyed_full = len(keyed) >= room
        rows.extend(keyed)
    if not null_first and len(rows) < limit:
        rows.extend(_fetch(db, dialect.rows_without_key(limit - len(rows)), ()))
    return rows, keys, keyed_full


def _claim_keys(db: Database, dialect: Dialect, room: int) -> tuple[list[str], list[Any]]:
    """Claim keys in chunks until their pending rows fill ``room``: (keys, their rows in seq order).

    Claiming ``room`` keys at once let one relay take every key when there are fewer keys than
    ``batch_size`` (100 keys, batches of 500: the other relays found nothing). So the first chunk is
    small (``room // CHUNK_DIVISOR`` keys) and the next ones are sized from the rows per key seen so far:
    a relay claims about as many keys as fill its batch and leaves the rest to the other relays.
    """
    keys: list[str] = []
    rows: list[Any] = []
    chunk = max(1, room // CHUNK_DIVISOR)
    last: tuple[Any, ...] = ()
    for _ in range(MAX_CHUNKS):
        claimed = _fetch(db, dialect.claim_keys(chunk, after=bool(last)), last)
        if not claimed:
            break
        new = [str(r[0]) for r in claimed]
        keys.extend(new)
        last = (claimed[-1][1], claimed[-1][0])
        rows.extend(_fetch(db, dialect.rows_of_keys(len(new), room - len(rows)), tuple(new)))
        if len(rows) >= room or len(claimed) < chunk:
            break
        per_key = max(len(rows) / len(keys), 1.0)
        chunk = max(1, min(room - len(rows), math.ceil((room - len(rows)) / per_key)))
    return keys, rows


def _finish_keys(
    db: Database, dialect: Dialect, keys: list[str], served: list[str], *, drained: bool, turn: int
) -> None:
    if drained:
        _execute(db, dialect.finish_keys(len(keys), drained=True), (turn, *keys))
        return
    # The keyed rows hit the limit: a key may have more rows waiting, keep its flag; the keys served go
    # to the back of the line, the others (claimed but not reached) keep their place.
    done = sorted(set(served))
    if done:
        _execute(db, dialect.finish_keys(len(done), drained=False), (turn, *done))


def _message(dialect: Dialect, row: Any) -> Message:
    _seq, message_id, topic, key, type_, payload, headers, created_at = row
    if isinstance(created_at, str):  # SQLite: Pony's text form
        created_at = datetime.fromisoformat(created_at)
    if isinstance(created_at, datetime) and created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=timezone.utc)
    if isinstance(payload, memoryview):
        payload = payload.tobytes()
    body = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    return Message(
        id=str(message_id),
        topic=str(topic),
        payload=body,
        key=key,
        type=str(type_),
        headers=orjson.loads(headers) if headers else {},
        created_at=created_at,
    )


def _fetch(db: Database, sql: str, arguments: tuple[Any, ...]) -> list[Any]:
    return list(_pony.execute_in_session(db, sql, arguments).fetchall())


def _execute(db: Database, sql: str, arguments: tuple[Any, ...]) -> None:
    _pony.execute_in_session(db, sql, arguments)
