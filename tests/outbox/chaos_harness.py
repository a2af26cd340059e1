"""The machinery of the outbox chaos test: brokers to stop and start, processes to kill, consumers, books.

Nothing here is mocked: the brokers are a real RabbitMQ (stopped with ``rabbitmqctl stop_app``) and a
private ``redis-server`` (append-only file, fsync at every write, killed with SIGKILL), the relay and the
producers are real processes killed with SIGKILL, and the consumers apply their side effects in the real
database inside :func:`ponykit.outbox.inbox`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pony.orm import Database, db_session, select

from . import chaos_app

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
GROUP = "chaos"  # the Redis consumer group


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this checkout's src/ and the harness module importable."""
    env = dict(os.environ)
    paths = [str(ROOT / "src"), str(HERE), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.pop("PYTHONSTARTUP", None)
    env.update(extra)
    return env


def wait_until(condition: Any, *, bound: float, what: str, step: float = 0.1) -> None:
    """Wait for ``condition()``; after ``bound`` seconds fail saying ``what`` (a bound, not a timing)."""
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {bound:.0f}s waiting for {what}")
        time.sleep(step)


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------------------
# Brokers


class RabbitBroker:
    """The local RabbitMQ: durable queues named by topic (the default exchange routes to them)."""

    kind = "rabbitmq"

    def __init__(self, url: str) -> None:
        self.url = url
        self.publisher_url = url
        self.stopped = False
        self.queues: list[str] = []

    def _channel(self) -> tuple[Any, Any]:
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        return connection, connection.channel()

    def prepare(self, topic: str) -> None:
        """Declare the durable queue ``topic`` (persistent messages in it survive a broker restart)."""
        connection, channel = self._channel()
        channel.queue_declare(topic, durable=True)
        connection.close()
        self.queues.append(topic)

    def stop(self) -> None:
        """Stop the RabbitMQ application (the Erlang node stays up, so start() is quick)."""
        self.stopped = True
        subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """Start the application again and wait until it accepts connections."""
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
        wait_until(self._answers, bound=60, what="RabbitMQ to accept connections after start_app")
        self.stopped = False

    def _answers(self) -> bool:
        try:
            connection, _channel = self._channel()
        except Exception:
            return False
        connection.close()
        return True

    def close(self) -> None:
        """Restore the broker if the test stopped it, and delete the test's queues."""
        if self.stopped:
            self.start()
        connection, channel = self._channel()
        for queue in self.queues:
            channel.queue_delete(queue)
        connection.close()

    def consume(self, consumer: Consumer) -> None:
        """Consume ``consumer.topic`` until ``consumer.done``, reconnecting while the broker is down."""
        import pika
        import pika.exceptions

        while not consumer.done.is_set():
            try:
                connection = pika.BlockingConnection(pika.URLParameters(self.url))
            except (pika.exceptions.AMQPError, OSError):
                time.sleep(0.2)
                continue
            try:
                channel = connection.channel()
                channel.basic_qos(prefetch_count=100)
                for method, properties, body in channel.consume(consumer.topic, inactivity_timeout=0.2):
                    if consumer.done.is_set():
                        break
                    if method is None:
                        continue
                    if not consumer.handle(properties.message_id, body):
                        break  # the consumer "crashed" before acking: the broker redelivers
                    channel.basic_ack(method.delivery_tag)  # after the handler's commit
            except (pika.exceptions.AMQPError, OSError):
                time.sleep(0.2)
            finally:
                with contextlib.suppress(Exception):  # already closed by the broker
                    connection.close()


class RedisBroker:
    """A private redis-server on a free port: append-only file with fsync at every write, in a tmp dir.

    Never the shared server on 6379: this one is killed with SIGKILL and started again on the same files.
    """

    kind = "redis"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.publisher_url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.start()

    def start(self) -> None:
        """Start the server (it replays its append-only file) and wait until it answers PING."""
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, bound=30, what=f"the private redis-server on port {self.port}")

    def _client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.publisher_url, socket_timeout=5, socket_connect_timeout=2)

    def _answers(self) -> bool:
        try:
            return bool(self._client().ping())
        except Exception:
            return False

    def stop(self) -> None:
        """Kill the server with SIGKILL: what it confirmed is on disk (appendfsync always)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def prepare(self, topic: str) -> None:
        """Create the stream ``topic`` and its consumer group, reading from the start."""
        self._client().xgroup_create(topic, GROUP, id="0", mkstream=True)

    def close(self) -> None:
        """Stop the server for good."""
        if self.process is not None:
            self.stop()

    def consume(self, consumer: Consumer) -> None:
        """Read ``consumer.topic`` in the group; entries not acked (a crash) are read again first."""
        import redis

        client = self._client()
        while not consumer.done.is_set():
            try:
                # Entries delivered to this consumer and never acked first (id 0), then new ones.
                reply = client.xreadgroup(GROUP, "c1", {consumer.topic: "0"}, count=100)
                entries = reply[0][1] if reply else []
                if not entries:
                    reply = client.xreadgroup(GROUP, "c1", {consumer.topic: ">"}, count=100, block=200)
                    entries = reply[0][1] if reply else []
                for entry_id, fields in entries:
                    if not consumer.handle(fields[b"id"].decode(), fields[b"payload"]):
                        break  # "crashed" before acking: the entry stays pending and is read again
                    client.xack(consumer.topic, GROUP, entry_id)  # after the handler's commit
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                time.sleep(0.2)


# ---------------------------------------------------------------------------------------------------------
# The consumer


class Consumer(threading.Thread):
    """Reads one approach's topic and applies each event's side effect once, inside the inbox.

    It "crashes" (drops its connection without acking, after the handler committed) on the first
    delivery of every ``crash_every``-th event, so the broker redelivers it: duplicates the inbox must
    absorb, on top of the relay's own re-sends.
    """

    def __init__(self, broker: Any, topic: str, database: Database, approach: str, crash_every: int = 23):
        super().__init__(name=f"consumer-{approach}", daemon=True)
        self.broker = broker
        self.topic = topic
        self.database = database
        self.approach = approach
        self.crash_every = crash_every
        self.done = threading.Event()
        self.deliveries: list[tuple[int, str, int, str]] = []  # (n, key, seq, message id), in order
        self.crashed: set[str] = set()
        self.last_delivery = time.monotonic()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.broker.consume(self)
        except BaseException as exc:  # reported by the test, not lost in a thread
            self.error = exc

    def handle(self, message_id: str, body: bytes) -> bool:
        """Apply the event's effect in the inbox; False when the consumer must "crash" before acking."""
        from ponykit.outbox import inbox

        data = json.loads(body)
        self.deliveries.append((data["n"], data["key"], data["seq"], message_id))
        self.last_delivery = time.monotonic()
        effect = self.database.entities["ChaosEffect"]
        with db_session, inbox(self.database).once(message_id) as fresh:
            if fresh:
                effect(approach=self.approach, n=data["n"], message_id=message_id)
        if data["n"] % self.crash_every == 0 and message_id not in self.crashed:
            self.crashed.add(message_id)
            return False
        return True

    def stop(self) -> None:
        """Stop consuming and wait for the thread."""
        self.done.set()
        self.join(30)


# ---------------------------------------------------------------------------------------------------------
# Processes: the producer (restarted after each self-kill) and the relay (killed by the test)


class Producer(threading.Thread):
    """Runs ``chaos_app.py START`` and restarts it after the step it died after."""

    def __init__(self, env: dict[str, str], log: IO[bytes]) -> None:
        super().__init__(name="producer", daemon=True)
        self.env = env
        self.log = log
        self.progress = -1  # the last step done
        self.restarts = 0
        self.error: str | None = None
        self.process: subprocess.Popen[str] | None = None
        self.elapsed = 0.0

    def run(self) -> None:
        began = time.monotonic()
        try:
            self._run()
        finally:
            self.elapsed = time.monotonic() - began

    def _run(self) -> None:
        start = 0
        while start < chaos_app.TRANSACTIONS:
            self.process = subprocess.Popen(
                [sys.executable, str(HERE / "chaos_app.py"), str(start)],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=self.log,
                text=True,
            )
            assert self.process.stdout is not None
            last = start - 1
            for line in self.process.stdout:
                last = int(line)
                self.progress = last
            status = self.process.wait()
            if status == -signal.SIGKILL:  # died right after the last COMMIT of step last + 1
                self.restarts += 1
                start = last + 2
                self.progress = last + 1
            else:
                if status != 0:
                    self.error = f"the producer exited with status {status}"
                return

    def kill(self) -> None:
        """Kill the current process (clean-up after a failed test)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class RelayProcess:
    """``python -m ponykit outbox relay chaos_app:db --to URL``: started, SIGKILLed, started again."""

    def __init__(self, publisher_url: str, env: dict[str, str], log: IO[bytes]) -> None:
        self.command = [
            sys.executable,
            "-m",
            "ponykit",
            "outbox",
            "relay",
            "chaos_app:db",
            "--to",
            publisher_url,
            "--batch-size",
            "50",
            "--poll-interval",
            "0.05",
            "--relays",
            "2",  # two relays share the keys: order per key must hold between them too
        ]
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.ready = threading.Event()  # the current process said it is publishing
        self.kills = 0
        self.starts = 0

    def start(self) -> None:
        """Start a relay process; :attr:`ready` is set when it has connected and begun publishing."""
        self.ready = threading.Event()
        self.process = subprocess.Popen(self.command, env=self.env, stdout=self.log, stderr=subprocess.PIPE)
        self.starts += 1
        threading.Thread(target=self._read, args=(self.process, self.ready), daemon=True).start()

    def _read(self, process: subprocess.Popen[bytes], ready: threading.Event) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self.log.write(line)
            if b"publishing from" in line:
                ready.set()
        ready.set()  # it exited: nobody waits for a dead process

    def kill(self) -> None:
        """SIGKILL: no clean-up, no finishing the batch; its transaction rolls back on the server."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.kills += 1
        self.process.wait()

    def terminate(self) -> int:
        """SIGTERM: the relay finishes its batch and exits; returns its exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


# ---------------------------------------------------------------------------------------------------------
# The books


@dataclass
class Outcome:
    """What one approach did: the figures of the docs' table."""

    approach: str
    committed: int = 0  # business transactions committed (rows in the database)
    failed: int = 0  # planned to commit but failed (in_tx while the broker was down)
    lost: int = 0  # committed, never delivered
    phantom: int = 0  # delivered, never committed
    duplicates: int = 0  # deliveries beyond the first of an event
    out_of_order: int = 0  # first deliveries of a key arriving after a later one of that key
    effects_twice: int = 0  # events whose side effect the consumer applied more than once
    effects_missing: int = 0  # delivered committed events whose side effect is absent
    lost_numbers: list[int] = field(default_factory=list)

    def row(self) -> str:
        """One Markdown table row."""
        figures = (
            self.committed,
            self.failed,
            self.lost,
            self.phantom,
            self.duplicates,
            self.out_of_order,
            self.effects_twice,
        )
        return f"| {self.approach} | " + " | ".join(str(f) for f in figures) + " |"


TABLE_HEADER = (
    "| approach | committed | failed | lost | phantom | duplicate deliveries | out of order "
    "| effects twice |\n"
    "|---|---|---|---|---|---|---|---|"
)


def account(
    database: Database, approach: str, deliveries: Iterable[tuple[int, str, int, str]], seed: int
) -> Outcome:
    """Compare what the consumer received with what the database committed."""
    order, effect = database.entities["ChaosOrder"], database.entities["ChaosEffect"]
    with db_session:
        committed = set(select(o.n for o in order if o.approach == approach)[:])
        effects = Counter(select(e.n for e in effect if e.approach == approach).without_distinct()[:])
    planned = {step.n for step in chaos_app.plan(seed) if not step.rollback}
    received: Counter[int] = Counter()
    last_seq: dict[str, int] = {}
    out_of_order = 0
    for n, key, seq, _message_id in deliveries:
        received[n] += 1
        if received[n] > 1:
            continue  # a redelivery may come back after later events: only first deliveries are ordered
        if seq < last_seq.get(key, 0):
            out_of_order += 1
        last_seq[key] = max(seq, last_seq.get(key, 0))
    lost = sorted(committed - received.keys())
    return Outcome(
        approach=approach,
        committed=len(committed),
        failed=len(planned - committed),
        lost=len(lost),
        phantom=len(received.keys() - committed),
        duplicates=sum(c - 1 for c in received.values()),
        out_of_order=out_of_order,
        effects_twice=sum(1 for c in effects.values() if c > 1),
        effects_missing=len((received.keys() & committed) - effects.keys()),
        lost_numbers=lost[:20],
    )


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, for a failure message."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def have(program: str) -> bool:
    """Whether ``program`` is on PATH."""
    return shutil.which(program) is not None
