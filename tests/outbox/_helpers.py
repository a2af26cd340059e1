"""Shared pieces of the outbox tests: a model with an outbox, and an in-process publisher."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from pony.orm import Database, Required

import ponykit as pk
from ponykit.errors import PublishError
from ponykit.outbox import Message

__all__ = ["FailingPublisher", "RecordingPublisher", "make_outbox_db"]


def make_outbox_db(make_db: Callable[[], Database], *, inbox: bool = True) -> Database:
    """A fresh Database with an ``Order`` entity, the outbox (and inbox) tables, mapped."""
    db = make_db()

    class Order(db.Entity):  # type: ignore[name-defined]
        total = Required(int)

    class Effect(db.Entity):  # type: ignore[name-defined]
        message_id = Required(str)

    pk.attach(db, outbox=True, inbox=inbox)
    db.generate_mapping(create_tables=True)
    return db


class RecordingPublisher:
    """Records every message it is given (in order), from any thread; optional hook before confirming."""

    name = "recording"

    def __init__(self, before_confirm: Callable[[Sequence[Message]], None] | None = None) -> None:
        self.messages: list[Message] = []
        self.batches: list[list[Message]] = []
        self.before_confirm = before_confirm
        self._lock = threading.Lock()

    def publish(self, messages: Sequence[Message]) -> None:
        if self.before_confirm is not None:
            self.before_confirm(messages)
        with self._lock:
            self.messages.extend(messages)
            self.batches.append(list(messages))

    def close(self) -> None:
        pass

    def ids(self) -> list[str]:
        with self._lock:
            return [m.id for m in self.messages]


class FailingPublisher:
    """A broker that is down: every publish raises PublishError (and records nothing)."""

    name = "down"

    def __init__(self) -> None:
        self.calls = 0

    def publish(self, messages: Sequence[Message]) -> None:
        self.calls += 1
        raise PublishError(f"broker {self.name!r} is down ({len(messages)} messages not confirmed)")

    def close(self) -> None:
        pass


def pending_count(db: Database) -> Any:
    """How many outbox rows are not sent yet."""
    from pony.orm import db_session, select

    entity = pk.outbox.outbox_entity(db)
    with db_session:
        return select(m for m in entity if m.sent_at is None).count()
