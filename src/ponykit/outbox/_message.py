"""What the relay hands a publisher (:class:`Message`) and the :class:`Publisher` protocol of brokers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

__all__ = ["Message", "Publisher"]


@dataclass(frozen=True, slots=True)
class Message:
    """One outbox event as the relay publishes it.

    ``id`` (a UUID in text form) is stable across re-deliveries: consumers deduplicate by it
    (:func:`ponykit.outbox.inbox`). ``topic`` routes the message (a RabbitMQ routing key, a Redis stream
    name, a Celery task name); ``key`` orders it (messages of one key are published in commit order and
    never concurrently); ``type`` is the event type (Debezium's ``type``; the topic unless given);
    ``payload`` is the UTF-8 JSON text stored by :func:`ponykit.outbox.publish`; ``headers`` are text.
    """

    id: str
    topic: str
    payload: bytes
    key: str | None = None
    type: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None

    def __repr__(self) -> str:
        # The payload may carry personal data: a repr (a log line, a traceback) never shows it.
        return f"Message(id={self.id!r}, topic={self.topic!r}, key={self.key!r}, {len(self.payload)} bytes)"


@runtime_checkable
class Publisher(Protocol):
    """A broker client the relay publishes through.

    ``publish`` sends ``messages`` in the order given and returns only once the broker confirmed every
    one of them (publisher confirms on RabbitMQ, the XADD reply on Redis); otherwise it raises
    :class:`~ponykit.errors.PublishError` and the relay sends the whole batch again later (at least once).
    After a failure the next call reconnects. ``name`` identifies the broker in logs and errors, with the
    password redacted. ``close`` releases the connection; it may be called more than once.
    """

    name: str

    def publish(self, messages: Sequence[Message]) -> None:
        """Send ``messages`` in order and wait for the broker's confirmation of each."""
        ...

    def close(self) -> None:
        """Close the broker connection."""
        ...
