"""``publisher_from_url``: a publisher from one URL, as the CLI's ``--to`` takes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..binding import redact_url
from ..errors import ConfigurationError
from ._celery import CeleryPublisher
from ._memory import InMemoryPublisher
from ._message import Publisher
from ._rabbitmq import RabbitMQPublisher
from ._redis_streams import RedisStreamPublisher

__all__ = ["publisher_from_url"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_EXAMPLES = (
    "amqp://user:***@rabbit:5672/?exchange=events, redis://redis:6379/0?stream_prefix=outbox:, "
    "celery+redis://redis:6379/0, celery+amqp://user:***@rabbit:5672//, memory://"
)


def _flag(name: str, text: str, url: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ConfigurationError(f"publisher URL {redact_url(url)!r}: {name}={text!r} should be true or false")


def _number(name: str, text: str, url: str, kind: Callable[[str], Any]) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise ConfigurationError(
            f"publisher URL {redact_url(url)!r}: {name}={text!r} should be a {kind.__name__}"
        ) from None


# The query options ponykit takes out of a URL (the rest stays for the client library), and how to read them.
_OPTIONS: dict[str, dict[str, str]] = {
    "rabbitmq": {
        "exchange": "str",
        "exchange_type": "str",
        "declare_exchange": "bool",
        "queue": "list",
        "durable": "bool",
        "persistent": "bool",
        "mandatory": "bool",
        "confirm_timeout": "float",
    },
    "redis": {"stream_prefix": "str", "maxlen": "int", "socket_timeout": "float"},
    "celery": {"queue": "str", "unpack": "bool", "timeout": "float"},
}


def _split_options(url: str, family: str) -> tuple[str, dict[str, Any]]:
    parts = urlsplit(url)
    known = _OPTIONS[family]
    rest: list[tuple[str, str]] = []
    options: dict[str, Any] = {}
    for name, text in parse_qsl(parts.query, keep_blank_values=True):
        kind = known.get(name)
        if kind is None:
            rest.append((name, text))
        elif kind == "bool":
            options[name] = _flag(name, text, url)
        elif kind == "int":
            options[name] = _number(name, text, url, int)
        elif kind == "float":
            options[name] = _number(name, text, url, float)
        elif kind == "list":
            options.setdefault("queues", []).append(text)
        else:
            options[name] = text
    return urlunsplit(parts._replace(query=urlencode(rest))), options


def publisher_from_url(url: str, **options: Any) -> Publisher:
    """Make the publisher a URL names; ``options`` (keyword arguments of its class) override the URL's.

    * ``amqp://`` / ``amqps://``: :class:`RabbitMQPublisher`; query options ``exchange``,
      ``exchange_type``, ``declare_exchange``, ``queue`` (repeatable: declared and bound to the exchange
      with its own name as binding key), ``durable``, ``persistent``, ``mandatory``, ``confirm_timeout``;
      other query options (``heartbeat``, ``ssl_options``...) are pika's.
    * ``redis://`` / ``rediss://`` / ``unix://``: :class:`RedisStreamPublisher`; ``stream_prefix``,
      ``maxlen``, ``socket_timeout``.
    * ``celery+<broker URL>`` (``celery+redis://...``, ``celery+amqp://...``): :class:`CeleryPublisher`
      sending through that broker; ``queue``, ``unpack``, ``timeout``.
    * ``memory://``: a new :class:`InMemoryPublisher`.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"a publisher URL looks like one of: {_EXAMPLES}; got {redact_url(str(url))!r}"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("amqp", "amqps"):
        broker_url, found = _split_options(url, "rabbitmq")
        return RabbitMQPublisher(broker_url, **{**found, **options})
    if scheme in ("redis", "rediss", "unix"):
        broker_url, found = _split_options(url, "redis")
        return RedisStreamPublisher(broker_url, **{**found, **options})
    if scheme.startswith("celery+"):
        broker_url, found = _split_options(url[len("celery+") :], "celery")
        return CeleryPublisher(broker_url, **{**found, **options})
    if scheme == "memory":
        return InMemoryPublisher()
    raise ConfigurationError(
        f"publisher URL {redact_url(url)!r}: unknown scheme {scheme!r}; use one of: {_EXAMPLES}"
    )
