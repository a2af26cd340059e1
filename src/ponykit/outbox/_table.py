"""The outbox and inbox tables: entities ponykit declares on the user's Database.

``attach(db, outbox=True)`` declares ``PonykitOutbox`` (table ``ponykit_outbox``) and ``PonykitOutboxKey``
(table ``ponykit_outbox_key``); ``attach(db, inbox=True)`` declares ``PonykitInbox`` (table
``ponykit_inbox``). Being entities of the user's Database, ``generate_mapping(create_tables=True)`` (or a
migration) creates them like the user's own tables, in the same schema.

``ponykit_outbox`` has Debezium's outbox columns (``id``, ``aggregatetype``, ``aggregateid``, ``type``,
``payload``) so that a CDC connector could replace the relay later, plus ``headers``, ``created_at`` and
the relay's bookkeeping: ``seq`` (the auto-increment primary key: the order of rows of one key),
``sent_at`` (NULL while pending), ``attempts`` and ``last_error`` (an error class and message, never
payload data) and ``dead_at`` (set when the relay gave up on a message the broker kept rejecting).
``ponykit_outbox_key`` has one row per message key: ``publish()`` locks it before writing a row of that
key (so the rows of one key are committed in ``seq`` order) and relays claim keys by locking it (``FOR
UPDATE SKIP LOCKED``); ``pending`` says the key may have unsent rows (1), or that it is blocked behind a
dead message (2: not claimed until ``Relay.requeue()``), and ``turn``
(the last ``seq`` a relay published for it) makes relays serve keys in turn.

ponykit writes and reads these tables with its own SQL (one statement per ``publish()``); the entities
are there for the DDL, for migrations and for users who want to query them.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pony.orm import Database, Optional, PrimaryKey, Required, composite_index

from .. import _pony
from .._kit import attached_databases
from ..errors import OutboxError

__all__ = [
    "INBOX_TABLE",
    "KEY_TABLE",
    "OUTBOX_TABLE",
    "Tables",
    "declare",
    "inbox_entity",
    "outbox_databases",
    "outbox_entity",
    "tables_of",
]

OUTBOX_TABLE = "ponykit_outbox"
KEY_TABLE = "ponykit_outbox_key"
INBOX_TABLE = "ponykit_inbox"
#: Longest topic, key, type and inbox message id (VARCHAR(255): a MariaDB index holds it in utf8mb4).
MAX_NAME = 255


@dataclass
class Tables:
    """The entities ponykit declared on one Database (None: not asked for)."""

    outbox: Any = None
    key: Any = None
    inbox: Any = None


_declared: weakref.WeakKeyDictionary[Database, Tables] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def declare(db: Database, *, outbox: bool, inbox: bool) -> Tables:
    """Declare the outbox and/or inbox entities on ``db`` (each once; later calls keep them)."""
    with _lock:
        tables = _declared.setdefault(db, Tables())
        if outbox and tables.outbox is None:
            tables.outbox, tables.key = _declare_outbox(db)
        if inbox and tables.inbox is None:
            tables.inbox = _declare_inbox(db)
        return tables


def tables_of(db: Database) -> Tables | None:
    """The :class:`Tables` of ``db``, or None when ``attach()`` declared neither table on it."""
    return _declared.get(db)


def outbox_databases() -> list[Database]:
    """The Databases on which ``attach(db, outbox=True)`` declared the outbox: the attached ones, or when
    ``ponykit.kit.forget()`` left them all out, every one still alive."""
    with _lock:
        found = [db for db, tables in _declared.items() if tables.outbox is not None]
    attached = set(map(id, attached_databases()))
    return [db for db in found if id(db) in attached] or found


def outbox_entity(db: Database) -> Any:
    """The outbox entity (``PonykitOutbox``, table ``ponykit_outbox``) of ``db``; query it like any entity:
    ``select(m for m in outbox_entity(db) if m.sent_at is None).count()``."""
    tables = _declared.get(db)
    if tables is None or tables.outbox is None:
        raise OutboxError(
            f"the {_pony.describe_database(db)} has no outbox table: call ponykit.attach(db, outbox=True) "
            "after binding it and before db.generate_mapping()"
        )
    return tables.outbox


def inbox_entity(db: Database) -> Any:
    """The inbox entity (``PonykitInbox``, table ``ponykit_inbox``) of ``db``."""
    tables = _declared.get(db)
    if tables is None or tables.inbox is None:
        raise OutboxError(
            f"the {_pony.describe_database(db)} has no inbox table: call ponykit.attach(db, inbox=True) "
            "after binding it and before db.generate_mapping()"
        )
    return tables.inbox


def _declare_outbox(db: Database) -> tuple[Any, Any]:
    # Class statements, not type(): Pony's composite_index() declares the index in the namespace of the
    # class being defined (its caller's frame); called after type() it was silently lost (no index).

    class PonykitOutbox(db.Entity):  # type: ignore[misc]
        """One outbox message (see ponykit.outbox.publish); Debezium's outbox columns."""

        _table_ = OUTBOX_TABLE
        seq = PrimaryKey(int, auto=True, size=64)
        id = Required(str, 36, unique=True)
        aggregatetype = Required(str, MAX_NAME)  # the topic
        aggregateid = Optional(str, MAX_NAME, nullable=True)  # the key (NULL: no ordering)
        type = Required(str, MAX_NAME)
        payload = Required(str)  # JSON text (TEXT / LONGTEXT)
        headers = Optional(str, nullable=True)  # JSON object of text values
        created_at = Required(datetime, precision=6)  # UTC
        sent_at = Optional(datetime, precision=6)  # UTC; NULL while pending
        attempts = Required(int, default=0)
        last_error = Optional(str, 1000, nullable=True)
        # UTC; set when the relay gave up on the row (max_attempts): kept, never published again until
        # Relay.requeue(); indexed because SQLite's relay looks up keys with a dead row every batch.
        dead_at = Optional(datetime, precision=6, index=True)
        # Relays read pending rows in seq order (sent_at IS NULL) and prune by sent_at; per key likewise.
        composite_index(sent_at, seq)
        composite_index(aggregateid, sent_at, seq)

    class PonykitOutboxKey(db.Entity):  # type: ignore[misc]
        """One message key of the outbox: the lock publishers and relays take for that key."""

        _table_ = KEY_TABLE
        aggregateid = PrimaryKey(str, MAX_NAME)
        pending = Required(int, size=16, default=0)
        turn = Required(int, size=64, default=0)
        # Relays claim keys WHERE pending = 1 ORDER BY turn.
        composite_index(pending, turn)

    PonykitOutbox.__module__ = PonykitOutboxKey.__module__ = __name__
    return PonykitOutbox, PonykitOutboxKey


def _declare_inbox(db: Database) -> Any:
    body: dict[str, Any] = {
        "__module__": __name__,
        "__doc__": "One message a consumer processed (see ponykit.outbox.inbox).",
        "_table_": INBOX_TABLE,
        "message_id": PrimaryKey(str, MAX_NAME),
        "processed_at": Required(datetime, precision=6),  # UTC
    }
    return type("PonykitInbox", (db.Entity,), body)
