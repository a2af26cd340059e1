"""Reliable messaging: a transactional outbox, a relay to brokers, an inbox, and ``enqueue_on_commit``.

``attach(db, outbox=True, inbox=True)`` declares the tables. Then, inside the transaction that changes
the data, :func:`publish` writes the message as a row of that transaction; a :class:`Relay` (a thread,
or ``python -m ponykit outbox relay``) publishes committed rows to the broker at least once, in commit
order per key; the consumer runs its work under :func:`inbox` so that a redelivered message has its
effects once. :func:`enqueue_on_commit` is the simpler, at-most-once alternative. See
``docs/outbox.md``.
"""

from __future__ import annotations

from ._celery import CeleryPublisher
from ._dead import DeadMessage
from ._inbox import Inbox, inbox
from ._memory import InMemoryPublisher
from ._message import Message, Publisher
from ._on_commit import enqueue_on_commit
from ._publish import publish
from ._publishers import publisher_from_url
from ._rabbitmq import RabbitMQPublisher
from ._redis_streams import RedisStreamPublisher
from ._relay import Relay
from ._table import declare as _declare
from ._table import inbox_entity, outbox_entity

# The publishers import their client library (pika, redis, celery) only when one is made: importing
# ponykit.outbox needs none of them.
__all__ = [
    "CeleryPublisher",
    "DeadMessage",
    "InMemoryPublisher",
    "Inbox",
    "Message",
    "Publisher",
    "RabbitMQPublisher",
    "RedisStreamPublisher",
    "Relay",
    "enqueue_on_commit",
    "inbox",
    "inbox_entity",
    "outbox_entity",
    "publish",
    "publisher_from_url",
]


def install(db: object, *, outbox: bool, inbox: bool) -> None:
    """Declare the outbox and/or inbox tables on ``db`` (``attach(db, outbox=..., inbox=...)`` calls it)."""
    from pony.orm import Database

    assert isinstance(db, Database)
    if outbox or inbox:
        _declare(db, outbox=outbox, inbox=inbox)
