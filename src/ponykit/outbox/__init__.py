"""Reliable messaging: a transactional outbox, a relay to RabbitMQ, Redis Streams and Celery, and an inbox.

(Being built: see issue #18 and docs/outbox.md.)
"""

from __future__ import annotations

__all__: list[str] = []
