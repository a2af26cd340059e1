"""The outbox under chaos, against the two ways of sending events it replaces (issue #18, "Must show").

On PostgreSQL and MariaDB, with a real RabbitMQ and a real Redis (Streams): 1,000 business transactions,
30% rolled back, each writing a business row and sending an event keyed by one of five keys with a per-key
sequence number, in three ways at once (separate topics, the same seeded plan):

* ``outbox``: ``publish()`` in the transaction; a relay PROCESS (``python -m ponykit outbox relay``) sends;
* ``on_commit``: the broker called after COMMIT (``pk.on_commit``), as ``delay_on_commit`` does;
* ``in_tx``: the broker called inside the transaction, before COMMIT (the naive ``delay()``).

One producer process runs each step of the plan once per approach (tests/outbox/chaos_app.py).
Meanwhile the producer dies with SIGKILL right after a COMMIT six times (and is restarted),
the relay process is SIGKILLed at random (seeded) moments and restarted, and the broker is stopped and
started once. Consumers read the topics and apply a side effect per event inside ``inbox(db).once(id)``,
acking after the commit, and "crash" before acking now and then so that events are redelivered.

Asserted: the outbox loses nothing, sends nothing for a rolled-back transaction, keeps the order of each
key (first deliveries; redeliveries may come later) and, with the inbox, applies every effect exactly
once. The naive approaches are measured: ``on_commit`` loses the events of the transactions its process
died after (and those it sent while the broker was down), ``in_tx`` sends the events of rolled-back
transactions. docs/outbox.md shows the table this test prints (``-s``), also appended to the file named
by ``PONYKIT_CHAOS_REPORT`` when set.
"""

from __future__ import annotations

import os
import random
import resource
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from . import chaos_app
from .chaos_harness import (
    TABLE_HEADER,
    Consumer,
    Outcome,
    Producer,
    RabbitBroker,
    RedisBroker,
    RelayProcess,
    account,
    child_env,
    have,
    tail,
    wait_until,
)

SEED = 18  # the number: every run draws the same plan, crashes, relay kills and outage
OUTAGE_AT = 400  # the broker stops when the producer has reached this step ...
OUTAGE_LENGTH = 40  # ... until it has run this many more steps into it
MIN_RELAY_KILLS = 8  # the relay process is SIGKILLed at least this many times ...
MAX_RELAY_KILLS = 12  # ... and at most this many (each restart costs a process start-up of CPU)
REQUIRE = os.environ.get("PONYKIT_REQUIRE_BACKENDS", "") not in ("", "0")

pytestmark = pytest.mark.backends("postgres", "mysql")


def _need(program: str, what: str) -> None:
    if not have(program):
        reason = f"{program} not found on PATH: the chaos test needs it to {what}"
        if REQUIRE:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


def _run_chaos(url: str, broker: Any, tmp_path: Path) -> dict[str, Outcome]:
    """Run the three approaches under the chaos; return their outcomes."""
    database = chaos_app.build(url, create_tables=True)
    try:
        return _run_on(database, url, broker, tmp_path)
    finally:
        database.disconnect()  # before the fixture drops the schema or database


def _run_on(database: Any, url: str, broker: Any, tmp_path: Path) -> dict[str, Outcome]:
    run = uuid.uuid4().hex[:10]
    prefix = f"pktest.chaos.{run}"
    topics = {approach: f"{prefix}.{approach}" for approach in chaos_app.APPROACHES}
    for topic in topics.values():
        broker.prepare(topic)
    log_path = tmp_path / "processes.log"
    log = log_path.open("ab")
    consumers = {a: Consumer(broker, topics[a], database, a) for a in chaos_app.APPROACHES}
    env = child_env(
        PONYKIT_CHAOS_DB=url,
        PONYKIT_CHAOS_SEED=str(SEED),
        PONYKIT_CHAOS_BROKER=broker.publisher_url,
        PONYKIT_CHAOS_PREFIX=prefix,
    )
    producer = Producer(env, log)
    relay = RelayProcess(broker.publisher_url, env, log)
    try:
        for consumer in consumers.values():
            consumer.start()
        relay.start()
        producer.start()
        outage = _Outage(broker, producer)
        outage.start()

        rng = random.Random(SEED)
        while (producer.is_alive() and relay.kills < MAX_RELAY_KILLS) or relay.kills < MIN_RELAY_KILLS:
            relay.ready.wait(60)  # imported, mapped, connected: from now on the moment is random
            if rng.random() < 0.5:
                # Right when an event arrives: the relay has published a batch and is about to mark it
                # sent, the moment whose kill makes the next relay send the batch again.
                outbox_consumer = consumers["outbox"]
                seen = len(outbox_consumer.deliveries)
                _soon(lambda: len(outbox_consumer.deliveries) > seen)  # noqa: B023 - called right here
            else:
                time.sleep(rng.uniform(0.0, 1.5))  # publishing, marking, backing off, or idle
            relay.kill()
            relay.start()
        producer.join()
        assert producer.error is None, f"{producer.error}\n{tail(log_path)}"
        outage.join(120)
        assert outage.error is None, f"stopping or starting the broker failed: {outage.error!r}"
        assert outage.done, "the broker outage did not happen"

        # Left alone now, the relay must catch up: every committed outbox event reaches the consumer.
        committed = {o.n for o in _orders(database, "outbox")}
        delivered = lambda: {d[0] for d in consumers["outbox"].deliveries}  # noqa: E731
        wait_until(
            lambda: committed <= delivered(), bound=120, what="the relay to deliver every committed event"
        )
        # And nothing more arrives anywhere (redeliveries of crashed consumers included).
        wait_until(
            lambda: all(time.monotonic() - c.last_delivery > 2.0 for c in consumers.values()),
            bound=120,
            what="the consumers to go idle",
        )
        relay.ready.wait(60)  # SIGTERM before the relay installed its handler would just end it
        assert relay.terminate() == 0, f"the relay did not stop cleanly on SIGTERM:\n{tail(log_path)}"
    finally:
        producer.kill()
        if relay.process is not None and relay.process.poll() is None:
            relay.kill()
        for consumer in consumers.values():
            consumer.stop()
        log.close()
    for consumer in consumers.values():
        assert consumer.error is None, f"consumer {consumer.approach} failed: {consumer.error!r}"
    outcomes = {a: account(database, a, consumers[a].deliveries, SEED) for a in chaos_app.APPROACHES}
    _report(broker.kind, url, outcomes, relay.kills, producer)
    return outcomes


def _soon(condition: Any, bound: float = 5.0) -> None:
    """Wait up to ``bound`` seconds for ``condition()`` (no error: the caller goes on either way)."""
    deadline = time.monotonic() + bound
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


class _Outage(threading.Thread):
    """Stops the broker once, when the producer reaches step OUTAGE_AT, for OUTAGE_LENGTH steps."""

    def __init__(self, broker: Any, producer: Producer) -> None:
        super().__init__(name="broker-outage", daemon=True)
        self.broker = broker
        self.producer = producer
        self.done = False
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while self.producer.progress < OUTAGE_AT:
                if not self.producer.is_alive():
                    return
                time.sleep(0.005)
            self.broker.stop()
            try:
                mark = self.producer.progress + OUTAGE_LENGTH
                _soon(lambda: self.producer.progress >= mark or not self.producer.is_alive(), 60)
            finally:
                self.broker.start()
            self.done = True
        except BaseException as exc:  # reported by the test
            self.error = exc


def _orders(database: Any, approach: str) -> list[Any]:
    from pony.orm import db_session, select

    order = database.entities["ChaosOrder"]
    with db_session:
        return list(select(o for o in order if o.approach == approach)[:])


def _report(
    broker: str, url: str, outcomes: dict[str, Outcome], relay_kills: int, producer: Producer
) -> None:
    backend = "PostgreSQL" if url.startswith("postgres") else "MariaDB"
    made = f"producer restarted {producer.restarts} times, ran {producer.elapsed:.0f}s"
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    here, below = me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime
    cpu = f"CPU so far: {here:.0f}s in pytest, {below:.0f}s in child processes"
    lines = [
        f"{backend} + {broker}: relay SIGKILLed {relay_kills} times; {made}; {cpu}",
        TABLE_HEADER,
        *(outcome.row() for outcome in outcomes.values()),
    ]
    text = "\n".join(lines)
    print("\n" + text)
    target = os.environ.get("PONYKIT_CHAOS_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(text + "\n\n")


def _check(outcomes: dict[str, Outcome]) -> None:
    outbox, after_commit, in_tx = outcomes["outbox"], outcomes["on_commit"], outcomes["in_tx"]
    committed = chaos_app.TRANSACTIONS - chaos_app.ROLLED_BACK
    # The outbox: nothing lost, nothing phantom, order per key kept, effects exactly once.
    assert outbox.committed == committed, outbox
    assert outbox.lost == 0, f"the outbox lost events {outbox.lost_numbers}: {outbox}"
    assert outbox.phantom == 0, outbox
    assert outbox.out_of_order == 0, outbox
    assert outbox.effects_twice == 0, outbox
    assert outbox.effects_missing == 0, outbox
    assert outbox.duplicates > 0, "no redelivery happened: the inbox was not exercised"
    # on_commit: never a phantom, but each crash right after COMMIT loses that transaction's event.
    assert after_commit.phantom == 0, after_commit
    assert after_commit.lost >= chaos_app.PRODUCER_KILLS, after_commit
    # in_tx: events of rolled-back transactions are delivered.
    assert in_tx.phantom > 0, in_tx
    for outcome in (after_commit, in_tx):  # the inbox works whatever sent the event
        assert outcome.effects_twice == 0, outcome


def test_chaos_rabbitmq(backend: Any, amqp_url: str, tmp_path: Path) -> None:
    """RabbitMQ: durable queue, persistent messages, confirms; ``rabbitmqctl stop_app``/``start_app``."""
    _need("rabbitmqctl", "stop and start RabbitMQ")
    broker = RabbitBroker(amqp_url)
    try:
        _check(_run_chaos(backend.url, broker, tmp_path))
    finally:
        broker.close()  # start_app again if the test stopped it, and delete the queues


def test_chaos_redis_streams(backend: Any, tmp_path: Path) -> None:
    """Redis Streams on a private redis-server (appendfsync always), killed with SIGKILL and restarted."""
    _need("redis-server", "run a private Redis it can kill")
    broker = RedisBroker(tmp_path / "redis")
    try:
        _check(_run_chaos(backend.url, broker, tmp_path))
    finally:
        broker.close()
