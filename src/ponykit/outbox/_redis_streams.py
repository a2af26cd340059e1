"""Redis Streams publisher: one XADD per message, a whole batch in one pipeline round trip."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..binding import redact_url
from ..errors import ConfigurationError
from ._brokers import import_extra, publish_error
from ._message import Message

__all__ = ["RedisStreamPublisher"]


class RedisStreamPublisher:
    """Publish outbox messages to Redis Streams.

    Each message is one ``XADD`` to the stream ``stream_prefix + topic`` with the fields ``id`` (the
    message id: consumers deduplicate by it, the stream entry id is Redis's own), ``type``, ``payload``
    (the JSON text), ``headers`` (a JSON object, text) and ``key`` (only when the message has one). A
    batch is sent as one pipeline (no MULTI: a failure part-way leaves the first entries added, and the
    relay sends the batch again, at least once); the XADD replies are the confirmation. ``maxlen`` trims
    each stream to about that many entries (``XADD ... MAXLEN ~ n``, which Redis does cheaply).

    ``url`` is a redis-py URL (``redis://:password@host:6379/0``, ``rediss://`` for TLS), or pass an
    existing ``client`` (left open by :meth:`close`). A dropped connection is reopened by redis-py at the
    next call. ``socket_timeout`` (seconds, default 30; connecting: 10) bounds every wait for Redis, so a
    hung server raises :class:`~ponykit.errors.PublishError` instead of holding the relay and its key
    claims; a ``client=`` passed in keeps its own timeouts (give it ``socket_timeout``).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        stream_prefix: str = "",
        maxlen: int | None = None,
        client: Any = None,
        socket_timeout: float = 30.0,
    ) -> None:
        if (url is None) == (client is None):
            raise ConfigurationError(
                "RedisStreamPublisher needs a Redis URL (redis://host:6379/0) or a client=, not both"
            )
        if maxlen is not None and maxlen < 1:
            raise ConfigurationError(f"RedisStreamPublisher(maxlen=...) must be >= 1 or None, got {maxlen}")
        if client is None:
            redis = import_extra("redis", "redis", "RedisStreamPublisher")
            assert url is not None
            client = redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=10.0)
            self._url = url
        else:
            kwargs = client.connection_pool.connection_kwargs
            self._url = f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
        self._client = client
        self._owned = url is not None  # a client= passed in is the caller's to close
        #: The broker, for logs and errors: the URL with its password replaced by ``***``.
        self.name = redact_url(self._url)
        self.stream_prefix = stream_prefix
        self.maxlen = maxlen

    def __repr__(self) -> str:
        return f"RedisStreamPublisher({self.name!r}, stream_prefix={self.stream_prefix!r})"

    def publish(self, messages: Sequence[Message]) -> None:
        """XADD ``messages`` in order, in one pipeline, and check every reply."""
        if not messages:
            return
        pipe = self._client.pipeline(transaction=False)
        for message in messages:
            fields: dict[str, str | bytes] = {
                "id": message.id,
                "type": message.type,
                "payload": message.payload,
            }
            if message.key is not None:
                fields["key"] = message.key
            fields["headers"] = (
                json.dumps(dict(message.headers), separators=(",", ":"), ensure_ascii=False)
                if message.headers
                else "{}"
            )
            pipe.xadd(self.stream_prefix + message.topic, fields, maxlen=self.maxlen, approximate=True)
        try:
            replies = pipe.execute(raise_on_error=True)
        except Exception as exc:
            raise publish_error(
                f"Redis at {self.name}",
                self._url,
                f"XADD of {len(messages)} messages (first stream {self.stream_prefix + messages[0].topic!r}) "
                "not confirmed",
                exc,
            ) from exc
        missing = sum(1 for reply in replies if not reply)
        if missing:  # pragma: no cover - Redis answers every XADD with an entry id or an error
            raise publish_error(
                f"Redis at {self.name}", self._url, f"{missing} of {len(messages)} XADD replies were empty"
            )

    def close(self) -> None:
        """Close the connections of the client made from the URL (a ``client=`` passed in stays open)."""
        if self._owned:
            self._client.close()
