"""``publish()``: write a message into the outbox, in the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from pony.orm import Database

from .. import _pony
from ..errors import OutboxError
from ._payload import encode_headers, encode_payload
from ._sql import dialect_of
from ._table import MAX_NAME, outbox_databases, tables_of

__all__ = ["db_value", "publish", "utcnow"]


def utcnow() -> datetime:
    """Now, in UTC, as the naive datetime the outbox columns store."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def db_value(db_dialect: str, value: datetime) -> Any:
    """A naive UTC datetime as the driver takes it (SQLite: Pony's text form)."""
    if db_dialect == "sqlite":
        return value.isoformat(sep=" ", timespec="microseconds")
    return value


def publish(
    topic: str,
    payload: Any,
    *,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
    type: str | None = None,
    db: Database | None = None,
    allow_sensitive: bool = False,
) -> str:
    """Write a message to the outbox in the current transaction; return its id (a UUID in text form).

    Inside a ``db_session``: the message is one row of ``ponykit_outbox``, written in the caller's
    transaction, so it exists if and only if the transaction commits; a :class:`~ponykit.outbox.Relay`
    then publishes it to the broker (at least once). ``topic`` routes it (a RabbitMQ routing key, a
    Redis stream, a Celery task name); messages with the same ``key`` are published in the order their
    transactions committed, never concurrently (``None``: no order). ``type`` is the event type
    (default: the topic); ``headers`` a mapping of text to text.

    ``payload``: JSON data (dict, list, str, numbers, bool, None), Decimals, dates, UUIDs, Enums and
    entity objects, encoded by ponykit's serializer; ``bytes`` are taken as JSON already encoded. An
    entity object with a sensitive attribute is refused unless ``allow_sensitive=True``. The rules are
    in ``docs/outbox.md``.

    On a keyed message (PostgreSQL, MariaDB) the key's row in ``ponykit_outbox_key`` stays locked until
    the transaction ends: two transactions publishing the same key run one after the other from there.

    Raises :class:`~ponykit.errors.OutboxError` outside a ``db_session``, on a Database not attached with
    ``attach(db, outbox=True)``, or for a payload that has no exact JSON form.
    """
    database = _resolve(db, topic)
    _check_name("topic", topic, topic)
    if key is not None:
        _check_name("key", key, topic)
    if type is not None:
        _check_name("type", type, topic)
    body = encode_payload(payload, topic=topic, allow_sensitive=allow_sensitive)
    header_text = encode_headers(headers, topic=topic)
    message_id = str(uuid.uuid4())
    dialect = dialect_of(database)
    row = (
        message_id,
        topic,
        key,
        type if type is not None else topic,
        body,
        header_text,
        db_value(dialect.name, utcnow()),
        0,
    )
    keyed = key is not None and dialect.name != "sqlite"  # SQLite: one writer at a time already
    if keyed and dialect.name == "mysql":
        # The key's row lock first: a second transaction publishing this key waits here, so its row gets
        # a later seq and commits later (commit order = seq order per key, what the relay relies on).
        _pony.execute_in_session(database, dialect.lock_key_sql, (key,))
    arguments: tuple[Any, ...] = (key, *row) if keyed and dialect.name == "postgres" else row
    _pony.execute_in_session(database, dialect.insert_keyed if keyed else dialect.insert_unkeyed, arguments)
    return message_id


def _resolve(db: Database | None, topic: Any) -> Database:
    if not _pony.in_db_session():
        raise OutboxError(
            f"publish({topic!r}, ...) was called outside a db_session: the message is written in the "
            "transaction of the data it reports on; call it inside the db_session (or transaction()) that "
            "makes the change"
        )
    if db is not None:
        tables = tables_of(db)
        if tables is None or tables.outbox is None:
            raise OutboxError(
                f"publish({topic!r}, db=...): the {_pony.describe_database(db)} has no outbox table; call "
                "ponykit.attach(db, outbox=True) before db.generate_mapping()"
            )
        return db
    in_use = [d for d in _pony.session_databases() if _has_outbox(d)] or outbox_databases()
    if len(in_use) == 1:
        return in_use[0]
    if not in_use:
        raise OutboxError(
            f"publish({topic!r}, ...) found no Database with an outbox in this db_session; call "
            "ponykit.attach(db, outbox=True) before db.generate_mapping(), and pass db=... if the session "
            "has not used that Database yet"
        )
    raise OutboxError(
        f"publish({topic!r}, ...) cannot tell which Database is meant ({len(in_use)} databases with an "
        "outbox are in use or declared); pass it: publish(..., db=db)"
    )


def _has_outbox(db: Database) -> bool:
    tables = tables_of(db)
    return tables is not None and tables.outbox is not None


def _check_name(what: str, value: Any, topic: Any) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        shown = f"a str of {len(value)} characters" if isinstance(value, str) else type(value).__name__
        raise OutboxError(
            f"publish({topic!r}, ...): {what} must be a non-empty str of at most {MAX_NAME} characters, "
            f"got {shown}"
        )
