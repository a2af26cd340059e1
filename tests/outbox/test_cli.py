"""``python -m ponykit outbox relay``: a real process draining the outbox to Redis Streams and RabbitMQ,
stopped by SIGTERM (status 0) and SIGINT (status 130), with progress on stderr and no password shown."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pika
import pytest
import redis
from pony.orm import Database, db_session, select

import ponykit
from conftest import Backend
from ponykit.outbox import outbox_entity, publish

SRC = Path(ponykit.__file__).resolve().parent.parent
ROOT = SRC.parent

APP = textwrap.dedent(
    """
    import os
    from pony import orm
    import ponykit

    db = orm.Database()
    ponykit.bind_url(db, os.environ["PKTEST_DB"])
    ponykit.attach(db, outbox=True)
    db.generate_mapping(create_tables=True)
    """
)


@pytest.fixture
def app(backend: Backend, tmp_path: Path, make_db: Callable[[], Database]) -> tuple[Database, Path]:
    """The app module (``pktest_outbox_app.py`` in tmp_path) and a Database of the test on the same tables."""
    (tmp_path / "pktest_outbox_app.py").write_text(APP)
    db = make_db()
    ponykit.attach(db, outbox=True)
    db.generate_mapping(create_tables=True)
    return db, tmp_path


def start(app_dir: Path, backend: Backend, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PKTEST_DB"] = backend.url
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(ROOT), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "ponykit", "outbox", "relay", "pktest_outbox_app:db", *args]
    return subprocess.Popen(command, cwd=app_dir, env=env, stderr=subprocess.PIPE, text=True)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    """Wait until ``condition()`` (or fail if the process ended or a generous minute passed)."""
    deadline = time.monotonic() + 60
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(
                f"the relay exited ({proc.returncode}) before {what}: {proc.communicate()[1]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {what} within 60 s: {proc.communicate()[1]}")
        time.sleep(0.05)


def publish_events(db: Database, topic: str, n: int) -> list[str]:
    with db_session:
        return [publish(topic, {"n": i}, key=f"k{i % 3}", db=db) for i in range(n)]


@pytest.fixture
def stream(redis_url: str, unique_prefix: str) -> Iterator[tuple[Any, str]]:
    client = redis.Redis.from_url(redis_url)
    yield client, unique_prefix
    for key in client.scan_iter(match=unique_prefix + "*"):
        client.delete(key)
    client.close()


def stream_ids(client: Any, name: str) -> list[str]:
    return [fields[b"id"].decode() for _, fields in client.xrange(name)]


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_relay_command_publishes_and_stops_on_signal(
    app: tuple[Database, Path],
    backend: Backend,
    redis_url: str,
    stream: tuple[Any, str],
    sig: int,
    status: int,
) -> None:
    db, app_dir = app
    client, prefix = stream
    ids = publish_events(db, "orders", 25)
    proc = start(
        app_dir,
        backend,
        "--to",
        f"{redis_url}?stream_prefix={prefix}",
        "--poll-interval",
        "0.1",
        "--batch-size",
        "10",
        "--progress-interval",
        "0",
    )
    wait_for(lambda: client.xlen(prefix + "orders") >= 25, proc, "25 messages")
    more = publish_events(db, "orders", 5)  # published while the relay runs: picked up by polling/NOTIFY
    wait_for(lambda: client.xlen(prefix + "orders") >= 30, proc, "30 messages")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    got = stream_ids(client, prefix + "orders")
    assert sorted(got) == sorted(ids + more)
    assert "1 relay(s) publishing from pktest_outbox_app:db to redis://" in err
    assert "messages published" in err
    assert "stopped: 30 messages published" in err


@pytest.mark.backends("postgres")
def test_relay_command_to_rabbitmq_with_two_relays_hides_the_password(
    app: tuple[Database, Path], backend: Backend, amqp_url: str
) -> None:
    db, app_dir = app
    queue = "pktest-" + uuid.uuid4().hex[:12]
    assert ":guest@" in amqp_url  # the fixture's URL has a password, which the output must not show
    ids = publish_events(db, queue, 40)
    proc = start(
        app_dir, backend, "--to", f"{amqp_url}?queue={queue}", "--relays", "2", "--poll-interval", "0.1"
    )
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = conn.channel()

        def count() -> int:
            try:
                return int(channel.queue_declare(queue, durable=True).method.message_count)
            except pika.exceptions.ChannelClosedByBroker:  # pragma: no cover - raced the relay's declare
                return 0

        wait_for(lambda: count() >= 40, proc, "40 messages")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        got = []
        while True:
            method, props, _ = channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            got.append(props.message_id)
        assert sorted(got) == sorted(ids)
        channel.queue_delete(queue)
    finally:
        conn.close()
    assert "2 relay(s) publishing" in err
    assert "amqp://guest:***@" in err
    assert "guest:guest" not in err


RELAY = [sys.executable, "-m", "ponykit", "outbox", "relay"]


@pytest.mark.backends("sqlite")
def test_relay_command_bad_target_and_bad_url(app: tuple[Database, Path], backend: Backend) -> None:
    _, app_dir = app
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(ROOT)]), PKTEST_DB=backend.url)
    bad = subprocess.run(
        [sys.executable, "-m", "ponykit", "outbox", "relay", "no_colon", "--to", "memory://"],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode != 0
    assert "module:name" in bad.stderr
    secret = "pw-" + uuid.uuid4().hex[:6]
    bad_url = subprocess.run(
        [
            sys.executable,
            "-m",
            "ponykit",
            "outbox",
            "relay",
            "pktest_outbox_app:db",
            "--to",
            f"kafka://u:{secret}@h/",
        ],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad_url.returncode == 1
    assert "unknown scheme 'kafka'" in bad_url.stderr
    assert secret not in bad_url.stderr
    bad_attempts = subprocess.run(
        [*RELAY, "pktest_outbox_app:db", "--to", "memory://", "--max-attempts", "-1"],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad_attempts.returncode != 0
    assert "max_attempts" in bad_attempts.stderr


def pending(db: Database) -> int:
    with db_session:
        return int(select(m for m in outbox_entity(db) if m.sent_at is None).count())


def _rabbitmqctl(*args: str) -> str:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed here (the broker is not local)")
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout


@pytest.mark.backends("postgres")
def test_relay_command_survives_the_broker_closing_its_connection(
    app: tuple[Database, Path], backend: Backend, amqp_url: str
) -> None:
    db, app_dir = app
    queue = "pktest-" + uuid.uuid4().hex[:12]
    name = "pktest-cli-" + uuid.uuid4().hex[:8]
    props = quote(repr({"connection_name": name}))
    first = publish_events(db, queue, 10)
    proc = start(app_dir, backend, "--to", f"{amqp_url}?queue={queue}&client_properties={props}")
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = conn.channel()

        def count() -> int:
            return int(channel.queue_declare(queue, durable=True).method.message_count)

        wait_for(lambda: count() >= 10, proc, "the first 10 messages")
        # Closed only once the batch was confirmed and marked sent: a close during a batch would (rightly)
        # have it sent again, and this test counts exact deliveries.
        wait_for(lambda: pending(db) == 0, proc, "the first batch marked sent")
        closed = 0
        for line in _rabbitmqctl("list_connections", "pid", "client_properties").splitlines():
            if name in line:
                _rabbitmqctl("close_connection", line.split("\t", 1)[0], "ponykit test: broker-side close")
                closed += 1
        assert closed == 1
        more = publish_events(db, queue, 10)  # the relay reconnects (or retries after a backoff)
        wait_for(lambda: count() >= 20, proc, "the next 10 messages")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        got = []
        while True:
            method, props_, _ = channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            got.append(props_.message_id)
        assert sorted(got) == sorted(first + more)  # nothing lost, nothing twice
        channel.queue_delete(queue)
    finally:
        conn.close()
