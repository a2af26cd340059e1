"""The outbox publishers against real brokers: RabbitMQ, Redis Streams, Celery (Redis and AMQP transports).

What is checked on each: the message is in the broker when ``publish`` returns (confirms awaited), order,
id/key/type/headers/payload carried, an unreachable broker gives ``PublishError`` without the password,
and a connection the broker closed (``rabbitmqctl close_connection``, ``CLIENT KILL``) is reopened.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import traceback
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pika
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from ponykit.errors import ConfigurationError, PublishError
from ponykit.outbox._celery import CeleryPublisher
from ponykit.outbox._memory import InMemoryPublisher
from ponykit.outbox._message import Message, Publisher
from ponykit.outbox._publishers import publisher_from_url
from ponykit.outbox._rabbitmq import RabbitMQPublisher
from ponykit.outbox._redis_streams import RedisStreamPublisher

SECRET = "s3cr3t-pw"


def messages(topic: str, n: int, key: str | None = "k1") -> list[Message]:
    """``n`` messages of ``topic`` numbered 0..n-1 in their payloads."""
    return [
        Message(
            id=str(uuid.uuid4()),
            topic=topic,
            payload=json.dumps({"n": i, "text": "é€"}).encode(),
            key=key,
            type="OrderPlaced",
            headers={"trace": f"t{i}"},
            created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        )
        for i in range(n)
    ]


def with_password(url: str, password: str, port: int | None = None) -> str:
    """``url`` with its user's password (and port) replaced."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{parts.username or 'guest'}:{quote(password)}@{host}:{port or parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def assert_no_secret(exc: BaseException, *secrets: str) -> None:
    """Neither the message, the repr nor the whole traceback (causes included) shows a secret."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) + repr(exc)
    for secret in secrets:
        assert secret not in text


def free_port() -> int:
    """A local TCP port nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_in_memory_publisher_records_and_fails_on_request() -> None:
    pub = InMemoryPublisher()
    assert isinstance(pub, Publisher)
    batch = messages("t", 3)
    pub.fail_next()
    with pytest.raises(PublishError, match="fail_next"):
        pub.publish(batch)
    assert pub.messages == []
    pub.publish(batch)
    assert pub.messages == batch
    assert "3 messages" in repr(pub)
    pub.clear()
    assert pub.messages == []
    pub.close()


# ---------------------------------------------------------------------------------------------------------
# RabbitMQ


@pytest.fixture
def queue(amqp_url: str) -> Iterator[str]:
    """A unique queue name, deleted (with its exchange of the same name) at the end."""
    name = "pktest-" + uuid.uuid4().hex[:12]
    yield name
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        ch.queue_delete(name)
        ch.exchange_delete(name + "-x")
    finally:
        conn.close()


def drain(amqp_url: str, queue: str) -> list[tuple[Any, bytes]]:
    """Every message in ``queue`` (properties, body), in queue order, acknowledged."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    out = []
    try:
        ch = conn.channel()
        while True:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append((props, body))
    finally:
        conn.close()


def queue_length(amqp_url: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        conn.close()


def test_rabbitmq_confirmed_messages_are_in_the_queue_in_order(amqp_url: str, queue: str) -> None:
    pub = RabbitMQPublisher(amqp_url, queues=[queue])
    assert isinstance(pub, Publisher)
    batch = messages(queue, 1200)
    try:
        pub.publish(batch[:700])
        # publish returned: the broker confirmed, so the messages are already counted in the queue.
        assert queue_length(amqp_url, queue) == 700
        pub.publish(batch[700:])
        assert queue_length(amqp_url, queue) == 1200
    finally:
        pub.close()
    got = drain(amqp_url, queue)
    assert [p.message_id for p, _ in got] == [m.id for m in batch]
    props, body = got[5]
    assert body == batch[5].payload
    assert props.delivery_mode == 2  # persistent
    assert props.content_type == "application/json"
    assert props.type == "OrderPlaced"
    assert props.headers == {"trace": "t5", "key": "k1", "type": "OrderPlaced"}
    assert props.timestamp == int(batch[5].created_at.timestamp())  # type: ignore[union-attr]


def test_rabbitmq_exchange_declaration_and_binding(amqp_url: str, queue: str) -> None:
    exchange = queue + "-x"
    pub = publisher_from_url(
        f"{amqp_url}?exchange={exchange}&declare_exchange=true&queue={queue}&mandatory=true"
    )
    assert isinstance(pub, RabbitMQPublisher)
    try:
        pub.publish(messages(queue, 3, key=None))
        assert queue_length(amqp_url, queue) == 3
        # No queue bound for this routing key: with mandatory=True the broker returns it, and that raises.
        with pytest.raises(PublishError, match="unroutable"):
            pub.publish(messages("nobody-listens", 1))
        pub.publish(messages(queue, 1))  # the same publisher goes on
    finally:
        pub.close()
    got = drain(amqp_url, queue)
    assert len(got) == 4
    assert "key" not in got[0][0].headers


def test_rabbitmq_unreachable_broker_raises_publish_error_without_password(amqp_url: str) -> None:
    url = with_password(amqp_url, SECRET, port=free_port())
    pub = RabbitMQPublisher(url, connect_timeout=5)
    assert SECRET not in pub.name
    assert SECRET not in repr(pub)
    with pytest.raises(PublishError) as info:
        pub.publish(messages("t", 2))
    assert isinstance(info.value, ConnectionError)
    assert "RabbitMQ at amqp://guest:***@127.0.0.1" in str(info.value)
    assert_no_secret(info.value, SECRET)
    pub.close()


def test_rabbitmq_wrong_password_raises_publish_error_without_password(amqp_url: str) -> None:
    pub = RabbitMQPublisher(with_password(amqp_url, SECRET))
    with pytest.raises(PublishError) as info:
        pub.publish(messages("t", 1))
    assert_no_secret(info.value, SECRET)


def _rabbitmqctl(*args: str) -> str:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed here (the broker is not local)")
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


def _close_connection_named(name: str) -> None:
    """Close the broker-side connection whose client named itself ``name`` (and wait until it is gone)."""
    for _ in range(50):
        listing = _rabbitmqctl("list_connections", "pid", "client_properties")
        targets = [line.split("\t", 1)[0] for line in listing.splitlines() if name in line]
        if targets:
            for target in targets:
                _rabbitmqctl("close_connection", target, "ponykit test: broker-side close")
            return
        time.sleep(0.1)
    raise AssertionError(f"no broker connection named {name}")


def test_rabbitmq_reconnects_after_broker_closes_the_connection(amqp_url: str, queue: str) -> None:
    name = "pktest-conn-" + uuid.uuid4().hex[:8]
    props = quote(repr({"connection_name": name}))
    pub = RabbitMQPublisher(f"{amqp_url}?client_properties={props}", queues=[queue])
    batch = messages(queue, 30)
    try:
        pub.publish(batch[:10])
        _close_connection_named(name)
        # Closed while idle: noticed before sending, reopened, and the batch goes through.
        pub.publish(batch[10:20])
        _close_connection_named(name)
        pub.publish(batch[20:])
    finally:
        pub.close()
    got = [p.message_id for p, _ in drain(amqp_url, queue)]
    assert got == [m.id for m in batch]


def test_rabbitmq_idle_past_the_heartbeat_timeout_reconnects(amqp_url: str, queue: str) -> None:
    # An idle relay does not run pika's I/O loop, so it sends no heartbeats: the broker drops the
    # connection. The next publish notices before sending and opens a new one.
    name = "pktest-idle-" + uuid.uuid4().hex[:8]
    props = quote(repr({"connection_name": name}))
    pub = RabbitMQPublisher(f"{amqp_url}?heartbeat=1&client_properties={props}", queues=[queue])
    try:
        pub.publish(messages(queue, 1))
        for _ in range(300):
            if name not in _rabbitmqctl("list_connections", "client_properties"):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the broker kept the idle connection")
        pub.publish(messages(queue, 2))
    finally:
        pub.close()
    assert queue_length(amqp_url, queue) == 3


def test_rabbitmq_close_is_idempotent_and_publish_reopens(amqp_url: str, queue: str) -> None:
    pub = RabbitMQPublisher(amqp_url, queues=[queue])
    pub.publish([])  # nothing to send: no connection needed
    pub.close()
    pub.publish(messages(queue, 1))
    pub.close()
    pub.close()
    pub.publish(messages(queue, 1))
    pub.close()
    assert queue_length(amqp_url, queue) == 2


def test_rabbitmq_declare_exchange_needs_a_name(amqp_url: str) -> None:
    with pytest.raises(ConfigurationError, match="exchange name"):
        RabbitMQPublisher(amqp_url, declare_exchange=True)


# ---------------------------------------------------------------------------------------------------------
# Redis Streams


@pytest.fixture
def redis_client(redis_url: str, unique_prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    for key in client.scan_iter(match=unique_prefix + "*"):
        client.delete(key)
    client.close()


def test_redis_streams_entries_carry_the_message(
    redis_url: str, redis_client: Any, unique_prefix: str
) -> None:
    pub = RedisStreamPublisher(redis_url, stream_prefix=unique_prefix)
    assert isinstance(pub, Publisher)
    batch = messages("orders", 1200) + messages("orders", 1, key=None)
    pub.publish(batch[:600])
    assert redis_client.xlen(unique_prefix + "orders") == 600  # the XADD replies came back: they are there
    pub.publish(batch[600:])
    pub.close()
    entries = redis_client.xrange(unique_prefix + "orders")
    assert [fields[b"id"].decode() for _, fields in entries] == [m.id for m in batch]
    fields = entries[3][1]
    assert fields[b"payload"] == batch[3].payload
    assert fields[b"key"] == b"k1"
    assert fields[b"type"] == b"OrderPlaced"
    assert json.loads(fields[b"headers"]) == {"trace": "t3"}
    assert b"key" not in entries[-1][1]


def test_redis_streams_maxlen_trims(redis_url: str, redis_client: Any, unique_prefix: str) -> None:
    pub = publisher_from_url(f"{redis_url}?stream_prefix={quote(unique_prefix)}&maxlen=100")
    assert isinstance(pub, RedisStreamPublisher)
    assert pub.maxlen == 100
    for _ in range(10):
        pub.publish(messages("t", 200))
    pub.close()
    # MAXLEN ~ trims whole macro nodes only: about 100, never all 2,000.
    assert 100 <= redis_client.xlen(unique_prefix + "t") < 1000


def test_redis_streams_unreachable_raises_publish_error_without_password(redis_url: str) -> None:
    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    pub = RedisStreamPublisher(url)
    assert SECRET not in pub.name
    with pytest.raises(PublishError) as info:
        pub.publish(messages("t", 2))
    assert "Redis at redis://:***@127.0.0.1" in str(info.value)
    assert_no_secret(info.value, SECRET)


def test_redis_streams_reconnect_after_client_kill(
    redis_url: str, redis_client: Any, unique_prefix: str
) -> None:
    name = "pktest-" + uuid.uuid4().hex[:8]
    pub = RedisStreamPublisher(f"{redis_url}?client_name={name}", stream_prefix=unique_prefix)
    batch = messages("t", 30)
    pub.publish(batch[:10])
    for _ in range(2):
        killed = [c for c in redis_client.client_list() if c.get("name") == name]
        assert killed
        for client in killed:
            redis_client.client_kill_filter(_id=client["id"])
        # redis-py notices the dead connection and sends over a new one (its retry), or the call fails
        # once and the next one (the relay's retry) goes through: either way nothing is lost.
        try:
            pub.publish(batch[10:20] if _ == 0 else batch[20:])
        except PublishError:
            pub.publish(batch[10:20] if _ == 0 else batch[20:])
    pub.close()
    ids = [f[b"id"].decode() for _, f in redis_client.xrange(unique_prefix + "t")]
    assert list(dict.fromkeys(ids)) == [m.id for m in batch]


def test_redis_streams_needs_url_or_client(redis_url: str) -> None:
    with pytest.raises(ConfigurationError):
        RedisStreamPublisher()
    client = redis.Redis.from_url(redis_url)
    pub = RedisStreamPublisher(client=client)
    pub.close()
    assert client.ping()  # a client passed in is left open
    client.close()
    with pytest.raises(ConfigurationError, match="maxlen"):
        RedisStreamPublisher(redis_url, maxlen=0)


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@given(
    payload=st.recursive(
        st.none() | st.booleans() | st.integers() | text,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=10,
    ),
    key=st.none() | text,
    headers=st.dictionaries(text.filter(lambda s: s not in ("key", "type")), text, max_size=4),
)
def test_redis_streams_round_trip_user_data(
    redis_url: str,
    redis_client: Any,
    unique_prefix: str,
    payload: Any,
    key: str | None,
    headers: dict[str, str],
) -> None:
    pub = RedisStreamPublisher(client=redis_client, stream_prefix=unique_prefix)
    message = Message(
        id=str(uuid.uuid4()),
        topic="h",
        payload=json.dumps(payload).encode(),
        key=key,
        type="T",
        headers=headers,
    )
    pub.publish([message])
    _, fields = redis_client.xrevrange(unique_prefix + "h", count=1)[0]
    assert json.loads(fields[b"payload"]) == payload
    assert fields.get(b"key", b"").decode() == (key or "")
    assert (b"key" in fields) == (key is not None)
    assert json.loads(fields[b"headers"]) == headers


# ---------------------------------------------------------------------------------------------------------
# Celery


@pytest.fixture
def celery_queue(redis_client: Any) -> Iterator[str]:
    name = "pktest-" + uuid.uuid4().hex[:12]
    yield name
    for key in redis_client.scan_iter(match=f"*{name}*"):  # the queue and kombu's binding keys
        redis_client.delete(key)
    for key in redis_client.scan_iter(match="_kombu.binding.*"):
        for member in redis_client.smembers(key):
            if name.encode() in member:
                redis_client.srem(key, member)


def test_celery_over_redis_sends_task_messages(redis_url: str, redis_client: Any, celery_queue: str) -> None:
    pub = publisher_from_url(f"celery+{redis_url}?queue={celery_queue}")
    assert isinstance(pub, CeleryPublisher)
    batch = [
        Message(id=str(uuid.uuid4()), topic="app.tasks.ship", payload=b'{"order": 7}', key="o7", type="Ship"),
        Message(id=str(uuid.uuid4()), topic="app.tasks.bill", payload=b"[1, 2]", headers={"trace": "x"}),
        Message(id=str(uuid.uuid4()), topic="app.tasks.note", payload=b'"hello"'),
    ]
    pub.publish(batch)
    pub.close()
    # kombu's Redis transport LPUSHes: the oldest message is at the right end.
    raw = [json.loads(item) for item in reversed(redis_client.lrange(celery_queue, 0, -1))]
    assert [r["headers"]["id"] for r in raw] == [m.id for m in batch]
    assert [r["headers"]["task"] for r in raw] == [m.topic for m in batch]
    bodies = [json.loads(base64.b64decode(r["body"])) for r in raw]
    assert [b[:2] for b in bodies] == [[[], {"order": 7}], [[1, 2], {}], [["hello"], {}]]
    assert raw[0]["headers"]["key"] == "o7"
    assert raw[0]["headers"]["type"] == "Ship"
    assert raw[1]["headers"]["trace"] == "x"


def test_celery_unpack_false_passes_the_payload_whole(
    redis_url: str, redis_client: Any, celery_queue: str
) -> None:
    pub = CeleryPublisher(redis_url, queue=celery_queue, unpack=False)
    pub.publish([Message(id=str(uuid.uuid4()), topic="t", payload=b'{"a": 1}')])
    pub.close()
    body = json.loads(base64.b64decode(json.loads(redis_client.lindex(celery_queue, 0))["body"]))
    assert body[:2] == [[{"a": 1}], {}]


def test_celery_over_amqp_with_confirms(amqp_url: str, queue: str) -> None:
    celery = pytest.importorskip("celery")
    app = celery.Celery("pktest", broker=amqp_url, set_as_current=False)
    app.conf.broker_transport_options = {"confirm_publish": True}
    pub = CeleryPublisher(app, queue=queue)
    batch = messages("app.tasks.ship", 5)
    pub.publish(batch)
    pub.close()
    got = drain(amqp_url, queue)  # kombu declared the queue durable; the messages are there
    assert [p.headers["id"] for p, _ in got] == [m.id for m in batch]
    assert got[0][0].headers["key"] == "k1"
    assert json.loads(got[0][1])[:2] == [[], {"n": 0, "text": "é€"}]
    app.close()


def test_celery_unreachable_broker_raises_publish_error_without_password() -> None:
    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    pub = CeleryPublisher(url)
    assert SECRET not in pub.name
    with pytest.raises(PublishError) as info:
        pub.publish(messages("t", 1))
    assert_no_secret(info.value, SECRET)
    pub.close()


# ---------------------------------------------------------------------------------------------------------
# publisher_from_url


def test_publisher_from_url_schemes(amqp_url: str) -> None:
    assert isinstance(publisher_from_url("memory://"), InMemoryPublisher)
    rabbit = publisher_from_url(amqp_url + "?exchange=events&persistent=false", confirm_timeout=3)
    assert isinstance(rabbit, RabbitMQPublisher)
    assert rabbit.exchange == "events"
    assert isinstance(publisher_from_url("rediss://:pw@example.invalid:6380/0"), RedisStreamPublisher)
    assert isinstance(publisher_from_url("celery+amqp://guest:pw@example.invalid//"), CeleryPublisher)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        (f"kafka://u:{SECRET}@host/", "unknown scheme 'kafka'"),
        (f"u:{SECRET}@host", "looks like one of"),
        (f"amqp://u:{SECRET}@host/?durable=maybe", "durable='maybe' should be true or false"),
        (f"redis://u:{SECRET}@host/?maxlen=lots", "maxlen='lots' should be a int"),
    ],
)
def test_publisher_from_url_errors_hide_the_password(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as info:
        publisher_from_url(url)
    assert_no_secret(info.value, SECRET)


# ---------------------------------------------------------------------------------------------------------
# A hung broker: bounded waits turn it into PublishError (the relay backs off and releases its claims)


@pytest.fixture
def paused_redis(redis_client: Any) -> Iterator[None]:
    """Redis with writes paused (CLIENT PAUSE ... WRITE: reads and the unpause still work), unpaused at
    the end: XADD and LPUSH hang as on a stuck server."""
    redis_client.execute_command("CLIENT", "PAUSE", 20_000, "WRITE")
    try:
        yield
    finally:
        redis_client.execute_command("CLIENT", "UNPAUSE")


def test_redis_streams_hung_server_raises_publish_error(
    redis_url: str, redis_client: Any, unique_prefix: str, paused_redis: None
) -> None:
    pub = RedisStreamPublisher(redis_url, stream_prefix=unique_prefix, socket_timeout=0.5)
    with pytest.raises(PublishError, match="not confirmed"):
        pub.publish(messages("t", 3))
    pub.close()


def test_celery_hung_redis_raises_publish_error(
    redis_url: str, redis_client: Any, celery_queue: str, paused_redis: None
) -> None:
    pub = publisher_from_url(f"celery+{redis_url}?queue={celery_queue}&timeout=0.5")
    assert isinstance(pub, CeleryPublisher) and pub.timeout == 0.5
    with pytest.raises(PublishError, match="was not sent"):
        pub.publish(messages("app.tasks.t", 1))
    pub.close()


def test_publisher_timeouts_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        CeleryPublisher("redis://127.0.0.1:1/0", timeout=0)


def test_rabbitmq_silent_server_raises_publish_error() -> None:
    # A server that accepts the TCP connection and never answers the AMQP handshake: a hung broker.
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        pub = RabbitMQPublisher(f"amqp://guest:{SECRET}@127.0.0.1:{port}/", connect_timeout=0.5)
        with pytest.raises(PublishError) as info:
            pub.publish(messages("t", 1))
        assert_no_secret(info.value, SECRET)
        pub.close()
