"""Outbox relay throughput: ponykit's publishers and relay beside hand-written broker clients.

Brokers come from ``PONYKIT_TEST_AMQP`` and ``PONYKIT_TEST_REDIS``, as for the tests. The contenders
publish the same messages: about 120 bytes of JSON, 100 keys, persistent into a durable queue.

* ``test_outbox_publish_rabbitmq``: no database. ``pika`` is a hand-written ``BlockingConnection``
  loop in confirm mode, one ``basic_publish`` at a time. pika then waits for each confirm, which is how
  it is usually written. ``ponykit`` is ``RabbitMQPublisher.publish`` in batches of 500 (the relay's
  default): the batch is written, then every confirm is awaited.
* ``test_outbox_publish_redis``: no database. ``redis-py`` is a hand-written pipeline of ``XADD``
  commands per 500 messages; ``ponykit`` is ``RedisStreamPublisher``.
* ``test_outbox_relay_rabbitmq`` (PostgreSQL): ``relay`` drains N committed outbox rows to RabbitMQ
  with ``Relay.run_once()`` until nothing is left. That covers claiming the rows, publishing with
  confirms and marking them sent. ``pika`` is the hand-written loop of the first benchmark, with the
  same messages and no database work at all. ``test_outbox_relay_targets`` alternates the two and
  checks issue #18's target: the relay reaches at least 50% of the pika loop's rate.
* ``test_outbox_four_relays`` (PostgreSQL; RabbitMQ and Redis Streams): 4 relay *processes*
  (``python -m ponykit outbox relay benchmarks.outbox_app:db --to URL``) wait for work. Then one
  transaction publishes N events. The benchmark measures from its COMMIT until the broker holds N
  messages. The consumer side then counts by message id: every event is there exactly once. Target:
  >= 5,000 events/s.

With ``--benchmark-disable`` (CI) everything runs once on small N and checks nothing about speed.
Figures are in docs/performance.md ("Reliable messaging").
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
import redis
from pony import orm
from pony.orm import db_session

import ponykit
from ponykit.outbox import Relay, publish
from ponykit.outbox._message import Message
from ponykit.outbox._rabbitmq import RabbitMQPublisher
from ponykit.outbox._redis_streams import RedisStreamPublisher

pytestmark = [pytest.mark.benchmark]

REQUIRE = os.environ.get("PONYKIT_REQUIRE_BACKENDS", "") not in ("", "0")
BATCH = 500
KEYS = 100
RELAY_TARGET = 0.5  # the relay's rate / the hand-written pika loop's rate
FOUR_RELAYS_TARGET = 5_000  # events/s
ROOT = Path(__file__).resolve().parent.parent
# Relay processes of test_outbox_four_relays (4, the target's count; another count to see how it scales).
RELAYS = int(os.environ.get("PONYKIT_BENCH_RELAYS", "4"))


def _service(var: str) -> str:
    url = os.environ.get(var)
    if not url:
        if REQUIRE:
            pytest.fail(f"{var} is not set and PONYKIT_REQUIRE_BACKENDS=1")
        pytest.skip(f"{var} is not set")
    return url


@pytest.fixture
def n(request: pytest.FixtureRequest) -> int:
    """Messages per run: 3,000 when timing (the pika loop takes seconds for that), 500 in the CI smoke run."""
    return 500 if request.config.getoption("benchmark_disable") else 3_000


def _payload(i: int) -> bytes:
    return json.dumps(
        {"order_id": i, "sku": f"SKU-{i % 977:05d}", "qty": i % 7 + 1, "note": "x" * 40}
    ).encode()


def make_messages(topic: str, n: int) -> list[Message]:
    """``n`` messages of ``topic`` with the benchmark's payloads and keys."""
    return [
        Message(
            id=str(uuid.uuid4()), topic=topic, payload=_payload(i), key=f"k{i % KEYS}", type="OrderPlaced"
        )
        for i in range(n)
    ]


# ---------------------------------------------------------------------------------------------------------
# RabbitMQ and Redis helpers


class Rabbit:
    """A durable queue of its own on the benchmark broker (deleted by :meth:`drop`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queue = "pkbench-" + uuid.uuid4().hex[:10]
        self.conn: Any = None
        self._open()
        self.channel.queue_declare(self.queue, durable=True)

    def _open(self) -> None:
        if self.conn is not None and self.conn.is_open:
            self.conn.close()
        self.conn = pika.BlockingConnection(pika.URLParameters(self.url))
        self.channel = self.conn.channel()

    def _retry(self, op: Callable[[], Any]) -> Any:
        # This connection sits idle while the outbox is seeded (no heartbeats), and other sessions'
        # chaos tests may close every broker connection: open a new one and try again.
        try:
            return op()
        except pika.exceptions.AMQPError:
            self._open()
            return op()

    def count(self) -> int:
        return int(
            self._retry(lambda: self.channel.queue_declare(self.queue, passive=True).method.message_count)
        )

    def purge(self) -> None:
        self._retry(lambda: self.channel.queue_purge(self.queue))

    def ids(self) -> Counter[str]:
        """Consume everything in the queue; the message ids with how often each came."""
        seen: Counter[str] = Counter()
        expected = self.count()
        self._open()
        self.channel.basic_qos(prefetch_count=2_000)
        for method, props, _body in self.channel.consume(self.queue, auto_ack=True, inactivity_timeout=2):
            if method is None:
                break
            seen[props.message_id] += 1
            if sum(seen.values()) >= expected:
                break
        self.channel.cancel()
        return seen

    def pika_loop(self, messages: list[Message]) -> Callable[[], None]:
        """The hand-written contender: a blocking channel in confirm mode, one publish (and wait) each."""
        self._open()
        channel = self.conn.channel()
        channel.confirm_delivery()

        def run() -> None:
            for m in messages:
                channel.basic_publish(
                    "",
                    self.queue,
                    m.payload,
                    pika.BasicProperties(
                        message_id=m.id,
                        content_type="application/json",
                        delivery_mode=2,
                        type=m.type,
                        headers={"key": m.key, "type": m.type},
                    ),
                )

        return run

    def drop(self) -> None:
        self._retry(lambda: self.channel.queue_delete(self.queue))
        self.conn.close()


@pytest.fixture
def rabbit() -> Iterator[Rabbit]:
    made = Rabbit(_service("PONYKIT_TEST_AMQP"))
    try:
        yield made
    finally:
        made.drop()


@pytest.fixture
def redis_prefix() -> Iterator[tuple[Any, str]]:
    client = redis.Redis.from_url(_service("PONYKIT_TEST_REDIS"))
    prefix = "pkbench:" + uuid.uuid4().hex[:10] + ":"
    try:
        yield client, prefix
    finally:
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
        client.close()


def _batches(publisher: Any, messages: list[Message]) -> Callable[[], None]:
    def run() -> None:
        for i in range(0, len(messages), BATCH):
            publisher.publish(messages[i : i + BATCH])

    return run


def _rounds(request: pytest.FixtureRequest, timing: int) -> int:
    return 1 if request.config.getoption("benchmark_disable") else timing


# ---------------------------------------------------------------------------------------------------------
# Publishers alone


@pytest.mark.parametrize("contender", ["pika", "ponykit"])
def test_outbox_publish_rabbitmq(
    benchmark: Any, rabbit: Rabbit, n: int, contender: str, request: pytest.FixtureRequest
) -> None:
    messages = make_messages(rabbit.queue, n)
    benchmark.group = f"outbox-publish-rabbitmq-{n}"
    benchmark.extra_info["contender"] = contender
    publisher = RabbitMQPublisher(rabbit.url)
    run = rabbit.pika_loop(messages) if contender == "pika" else _batches(publisher, messages)
    try:
        benchmark.pedantic(run, setup=rabbit.purge, rounds=_rounds(request, 3), iterations=1)
    finally:
        publisher.close()
    assert rabbit.count() == n


@pytest.mark.parametrize("contender", ["redis-py", "ponykit"])
def test_outbox_publish_redis(
    benchmark: Any, redis_prefix: tuple[Any, str], n: int, contender: str, request: pytest.FixtureRequest
) -> None:
    client, prefix = redis_prefix
    stream = prefix + "orders"
    messages = make_messages("orders", n)
    benchmark.group = f"outbox-publish-redis-{n}"
    benchmark.extra_info["contender"] = contender

    def by_hand() -> None:
        for i in range(0, n, BATCH):
            pipe = client.pipeline(transaction=False)
            for m in messages[i : i + BATCH]:
                pipe.xadd(stream, {"id": m.id, "type": m.type, "payload": m.payload, "key": m.key or ""})
            pipe.execute()

    publisher = RedisStreamPublisher(client=client, stream_prefix=prefix)
    run = by_hand if contender == "redis-py" else _batches(publisher, messages)

    def setup() -> None:
        client.delete(stream)

    benchmark.pedantic(run, setup=setup, rounds=_rounds(request, 5), iterations=1)
    assert client.xlen(stream) == n


# ---------------------------------------------------------------------------------------------------------
# The relay (PostgreSQL) beside the hand-written pika loop


class Outbox:
    """A Database attached with ``outbox=True`` on the benchmark backend."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.db = orm.Database()
        ponykit.bind_url(self.db, url)
        ponykit.attach(self.db, outbox=True)
        self.db.generate_mapping(create_tables=True)

    def seed(self, topic: str, n: int) -> list[str]:
        """``n`` committed events of ``topic``, after emptying the outbox; their ids."""
        with db_session:
            self.db.execute("DELETE FROM ponykit_outbox")
        with db_session:
            return [
                publish(
                    topic,
                    {"order_id": i, "sku": f"SKU-{i % 977:05d}", "qty": i % 7 + 1, "note": "x" * 40},
                    key=f"k{i % KEYS}",
                    db=self.db,
                )
                for i in range(n)
            ]

    def pending(self) -> int:
        with db_session:
            return int(self.db.select("SELECT count(*) FROM ponykit_outbox WHERE sent_at IS NULL")[0])

    def drop(self) -> None:
        with db_session:
            self.db.execute("DROP TABLE IF EXISTS ponykit_outbox")
            self.db.execute("DROP TABLE IF EXISTS ponykit_outbox_key")
        self.db.disconnect()


@pytest.fixture(scope="module")
def outbox(bench_env: Any) -> Iterator[Outbox]:
    made = Outbox(bench_env.url)
    try:
        yield made
    finally:
        made.drop()


def _drain(relay: Any) -> Callable[[], None]:
    def run() -> None:
        while relay.run_once():
            pass

    return run


@pytest.mark.bench_backends("postgres")
@pytest.mark.parametrize("contender", ["pika", "relay"])
def test_outbox_relay_rabbitmq(
    benchmark: Any,
    bench_env: Any,
    outbox: Outbox,
    rabbit: Rabbit,
    n: int,
    contender: str,
    request: pytest.FixtureRequest,
) -> None:
    benchmark.group = f"outbox-relay-rabbitmq-{n}-{bench_env.name}"
    benchmark.extra_info["contender"] = contender
    benchmark.extra_info["backend"] = bench_env.name
    publisher = RabbitMQPublisher(rabbit.url)
    relay = Relay(outbox.db, publisher, batch_size=BATCH)

    def setup() -> None:
        rabbit.purge()
        if contender == "relay":
            outbox.seed(rabbit.queue, n)

    run = rabbit.pika_loop(make_messages(rabbit.queue, n)) if contender == "pika" else _drain(relay)
    try:
        benchmark.pedantic(run, setup=setup, rounds=_rounds(request, 3), iterations=1)
    finally:
        publisher.close()
    assert rabbit.count() == n
    if contender == "relay":
        assert outbox.pending() == 0


@pytest.mark.bench_backends("postgres")
def test_outbox_relay_targets(
    bench_env: Any, outbox: Outbox, rabbit: Rabbit, n: int, request: pytest.FixtureRequest
) -> None:
    """The relay and the pika loop in turns; the paired median of rate(relay) / rate(pika)."""
    disabled = request.config.getoption("benchmark_disable")
    publisher = RabbitMQPublisher(rabbit.url)
    relay = Relay(outbox.db, publisher, batch_size=BATCH)
    pika_run = rabbit.pika_loop(make_messages(rabbit.queue, n))
    times: dict[str, list[float]] = {"pika": [], "relay": []}
    try:
        for _ in range(1 if disabled else 5):
            for contender in ("pika", "relay"):
                rabbit.purge()
                if contender == "relay":
                    ids = outbox.seed(rabbit.queue, n)
                run = pika_run if contender == "pika" else _drain(relay)
                begin = time.perf_counter()
                run()
                times[contender].append(time.perf_counter() - begin)
                assert rabbit.count() == n
        seen = rabbit.ids()
        assert seen == Counter(ids)  # the last round's events, each exactly once
    finally:
        publisher.close()
    if disabled:
        return
    ratio = statistics.median(p / r for p, r in zip(times["pika"], times["relay"], strict=True))
    rates = {c: n / statistics.median(t) for c, t in times.items()}
    print(
        f"\nrelay -> RabbitMQ, {n} events, {bench_env.name}: relay {rates['relay']:,.0f}/s, "
        f"pika loop {rates['pika']:,.0f}/s, relay/pika rate {ratio:.2f} (target >= {RELAY_TARGET})"
    )
    if ratio < RELAY_TARGET:
        pytest.xfail(f"issue #18's relay target missed: relay/pika = {ratio:.2f} < {RELAY_TARGET}")


# ---------------------------------------------------------------------------------------------------------
# Four relay processes


def _start_relays(url: str, to: str, count: int) -> list[subprocess.Popen[str]]:
    env = dict(os.environ)
    env["PONYKIT_BENCH_OUTBOX_DB"] = url
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    command = [
        sys.executable,
        "-m",
        "ponykit",
        "outbox",
        "relay",
        "benchmarks.outbox_app:db",
        "--to",
        to,
        "--batch-size",
        str(BATCH),
        "--poll-interval",
        "0.2",
        "--progress-interval",
        "3600",
    ]
    procs = [
        subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) for _ in range(count)
    ]
    for proc in procs:  # each says so once its relays are built (module imported, mapping done)
        line = proc.stderr.readline() if proc.stderr else ""
        assert "publishing" in line, line
    return procs


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err


@pytest.mark.bench_backends("postgres")
@pytest.mark.parametrize("broker", ["rabbitmq", "redis"])
def test_outbox_four_relays(
    bench_env: Any,
    outbox: Outbox,
    broker: str,
    request: pytest.FixtureRequest,
    redis_prefix: tuple[Any, str],
) -> None:
    disabled = request.config.getoption("benchmark_disable")
    n = 2_000 if disabled else 40_000
    with db_session:
        outbox.db.execute("DELETE FROM ponykit_outbox")
    rabbit: Rabbit | None = None
    client, prefix = redis_prefix
    if broker == "rabbitmq":
        rabbit = Rabbit(_service("PONYKIT_TEST_AMQP"))
        topic, to = rabbit.queue, rabbit.url

        def count() -> int:
            assert rabbit is not None
            return rabbit.count()
    else:
        topic, to = "orders", f"{_service('PONYKIT_TEST_REDIS')}?stream_prefix={prefix}"

        def count() -> int:
            return int(client.xlen(prefix + "orders"))

    procs = _start_relays(outbox.url, to, RELAYS)
    try:
        time.sleep(1.0)  # let every relay reach its first wait (LISTEN) before the events commit
        ids = outbox.seed(topic, n)  # one transaction: the relays see all n at its COMMIT
        begin = time.perf_counter()
        deadline = begin + 300
        while count() < n and time.perf_counter() < deadline:
            time.sleep(0.02)
        elapsed = time.perf_counter() - begin
    finally:
        _stop(procs)
    if rabbit is not None:
        seen = rabbit.ids()
        rabbit.drop()
    else:
        seen = Counter(fields[b"id"].decode() for _, fields in client.xrange(prefix + "orders"))
    duplicates = sum(c - 1 for c in seen.values() if c > 1)
    assert duplicates == 0, f"{duplicates} events were sent twice"
    assert set(seen) == set(ids), f"{len(set(ids) - set(seen))} events missing"
    assert outbox.pending() == 0
    rate = n / elapsed
    print(
        f"\n4 relay processes, PostgreSQL -> {broker}: {n} events in {elapsed:.2f}s = {rate:,.0f}/s, "
        "0 sent twice"
    )
    if not disabled and rate < FOUR_RELAYS_TARGET:
        pytest.xfail(f"issue #18's 4-relay target missed: {rate:,.0f}/s < {FOUR_RELAYS_TARGET:,}/s")
