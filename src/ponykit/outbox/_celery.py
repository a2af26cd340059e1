"""Celery publisher: each outbox message becomes a Celery task message, sent by name through the broker."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..binding import redact_url
from ..errors import ConfigurationError
from ._brokers import import_extra, publish_error
from ._message import Message

__all__ = ["CeleryPublisher"]

# Celery retries a failed send with its own policy; the relay has its own backoff, so one quick retry
# (which also replaces a pooled connection the broker closed) is enough here.
_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}


class CeleryPublisher:
    """Send outbox messages as Celery tasks: ``send_task(topic, ...)`` with ``task_id`` = :attr:`Message.id`.

    ``app_or_broker_url`` is a Celery app (its configuration, routes and broker apply) or a broker URL
    (``redis://...``, ``amqp://...``: a private app is made, with publisher confirms on AMQP). The topic
    is the task name, so no task code needs importing here. The payload gives the arguments: a JSON
    object becomes keyword arguments, a JSON array positional ones, anything else the one positional
    argument; with ``unpack=False`` the whole payload is always the one positional argument. The message
    key and type (and the message's headers) travel as task message headers (``key``, ``type``), and the
    task id, being the outbox message id, lets a worker deduplicate with :func:`ponykit.outbox.inbox`.
    ``queue`` sends every task to that queue (otherwise Celery's routing decides).

    :meth:`publish` returns once the broker accepted each task message: the reply to LPUSH on Redis,
    the publisher confirm on RabbitMQ when the app sets ``broker_transport_options={"confirm_publish":
    True}`` (set for an app made from a URL; set it on your own app too).

    ``timeout`` (seconds, default 30) bounds each send and its confirmation (kombu's ``timeout`` and
    ``confirm_timeout``), and for an app made from a URL also the connection and Redis socket waits: a
    broker that hangs raises :class:`~ponykit.errors.PublishError` instead of holding the relay (and the
    keys it claimed). For your own app, set ``broker_connection_timeout`` and, on Redis,
    ``broker_transport_options={"socket_timeout": ...}`` the same way.
    """

    def __init__(
        self, app_or_broker_url: Any, *, queue: str | None = None, unpack: bool = True, timeout: float = 30.0
    ) -> None:
        celery = import_extra("celery", "celery", "CeleryPublisher")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise ConfigurationError(f"CeleryPublisher(timeout=...) takes seconds > 0, got {timeout!r}")
        self.timeout = float(timeout)
        if isinstance(app_or_broker_url, str):
            url = app_or_broker_url
            app = celery.Celery("ponykit-outbox", broker=url, set_as_current=False)
            # Bounded waits: a hung broker becomes PublishError instead of a relay holding its claims.
            app.conf.broker_connection_timeout = self.timeout
            if url.startswith(("amqp", "pyamqp")):
                app.conf.broker_transport_options = {"confirm_publish": True}
            else:  # redis://, rediss://: redis-py's socket timeouts
                app.conf.broker_transport_options = {
                    "socket_timeout": self.timeout,
                    "socket_connect_timeout": self.timeout,
                }
            self._owned = True
        else:
            app = app_or_broker_url
            url = str(app.conf.broker_url or "")
            self._owned = False
        self.app = app
        self._url = url
        #: The broker, for logs and errors: the URL with its password replaced by ``***``.
        self.name = redact_url(url)
        self.queue = queue
        self.unpack = unpack

    def __repr__(self) -> str:
        return f"CeleryPublisher({self.name!r}, queue={self.queue!r})"

    def _arguments(self, payload: bytes) -> tuple[list[Any], dict[str, Any]]:
        value = json.loads(payload)
        if not self.unpack:
            return [value], {}
        if isinstance(value, dict):
            return [], value
        if isinstance(value, list):
            return value, {}
        return [value], {}

    def publish(self, messages: Sequence[Message]) -> None:
        """Send one task message per outbox message, in order; return once the broker took each one."""
        if not messages:
            return
        # timeout / confirm_timeout: kombu's bound on the publish and (AMQP) its confirmation.
        options: dict[str, Any] = {
            "retry": True,
            "retry_policy": _RETRY_POLICY,
            "timeout": self.timeout,
            "confirm_timeout": self.timeout,
        }
        if self.queue is not None:
            options["queue"] = self.queue
        message = messages[0]
        try:
            with self.app.producer_or_acquire() as producer:
                for message in messages:
                    args, kwargs = self._arguments(message.payload)
                    headers = dict(message.headers)
                    if message.key is not None:
                        headers["key"] = message.key
                    headers["type"] = message.type
                    self.app.send_task(
                        message.topic,
                        args=args,
                        kwargs=kwargs,
                        task_id=message.id,
                        producer=producer,
                        headers=headers,
                        add_to_parent=False,
                        **options,
                    )
        except Exception as exc:
            raise publish_error(
                f"Celery broker {self.name}",
                self._url,
                f"task {message.topic!r} (message {message.id}) was not sent",
                exc,
            ) from exc

    def close(self) -> None:
        """Release the broker connections of the app made from a URL (a Celery app passed in stays open)."""
        if self._owned:
            self.app.close()
