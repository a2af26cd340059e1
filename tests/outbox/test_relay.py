"""Relay: committed rows only, per-key order with several relays, no double sends, failures, kills."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import timedelta

import orjson
import pytest
from pony.orm import Database, PrimaryKey, Required, db_session, select

import ponykit as pk
from ponykit.errors import OptionError, PublishError
from ponykit.outbox import Message, Relay, publish

from ._helpers import FailingPublisher, RecordingPublisher, make_outbox_db, pending_count

WAIT = 60.0  # seconds a test waits for something that happens at once when the code is right


def drain(relay: Relay) -> int:
    total = 0
    while sent := relay.run_once():
        total += sent
    return total


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        # Not faster: InnoDB refreshes its lock tables only when they were not read for 0.1 s.
        time.sleep(0.25)


def test_batches_follow_seq_order_and_mark_rows_sent(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    with db_session:
        ids = [publish("t", {"i": i}, key=f"k{i % 3}" if i % 4 else None) for i in range(25)]
    publisher = RecordingPublisher()
    relay = Relay(db, publisher, batch_size=7)
    assert drain(relay) == 25
    assert sorted(publisher.ids()) == sorted(ids) and len(set(publisher.ids())) == 25
    for batch in publisher.batches:
        assert len(batch) <= 7
    _assert_key_order(publisher.messages, {mid: n for n, mid in enumerate(ids)})
    assert pending_count(db) == 0 and relay.run_once() == 0
    outbox = pk.outbox.outbox_entity(db)
    with db_session:
        assert select(m for m in outbox if m.attempts != 1).count() == 0


def test_a_failing_broker_leaves_rows_pending_and_they_go_out_later(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    with db_session:
        ids = [publish("t", {"i": i}, key="k" if i % 2 else None) for i in range(6)]
    down = FailingPublisher()
    relay = Relay(db, down)
    for _ in range(2):
        with pytest.raises(PublishError, match="is down"):
            relay.run_once()
    assert pending_count(db) == 6
    outbox = pk.outbox.outbox_entity(db)
    with db_session:
        rows = list(outbox.select())
        assert {r.attempts for r in rows} == {2}
        assert all(r.last_error.startswith("PublishError: broker 'down' is down") for r in rows)
        assert all(r.sent_at is None for r in rows)
    up = RecordingPublisher()
    assert drain(Relay(db, up)) == 6
    assert up.ids() == ids  # one transaction: seq order
    assert pending_count(db) == 0


class _GuardedPublisher(RecordingPublisher):
    """Fails the test if two relays ever publish messages of one key at the same time."""

    def __init__(self) -> None:
        super().__init__(before_confirm=self._enter)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.overlaps: list[str] = []
        self._guard = threading.Lock()

    def _enter(self, messages: Sequence[Message]) -> None:
        keys = {m.key for m in messages if m.key is not None}
        with self._guard:
            for key in keys:
                if self.in_flight[key]:
                    self.overlaps.append(key)
                self.in_flight[key] += 1
        time.sleep(0.002)  # widen the window in which an overlap would show (no timing is asserted)
        with self._guard:
            for key in keys:
                self.in_flight[key] -= 1


def test_several_relays_keep_per_key_order_and_send_each_message_once(
    make_db: Callable[[], Database],
) -> None:
    db = make_db()

    class Stamp(db.Entity):  # type: ignore[name-defined]
        message_id = PrimaryKey(str)
        n = Required(int)

    class Counter(db.Entity):  # type: ignore[name-defined]
        key = PrimaryKey(str)
        n = Required(int)

    pk.attach(db, outbox=True)
    db.generate_mapping(create_tables=True)
    keys = [f"key-{i}" for i in range(5)]
    with db_session:
        for key in keys:
            Counter(key=key, n=0)
    publisher = _GuardedPublisher()
    done = threading.Event()
    committed: list[str] = []
    rolled_back: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def business(worker: int) -> None:
        rng = random.Random(worker)
        for i in range(40):
            key = rng.choice(keys)
            fail = rng.random() < 0.3
            for _attempt in range(20):  # deadlocks or busy SQLite are retried like an app would
                try:
                    with db_session:
                        # publish() first, then the business row: commit order per key is the Counter's
                        # order, and the outbox must publish the key's messages in that order.
                        mid = publish("orders", {"worker": worker, "i": i}, key=key, db=db)
                        counter = Counter.get_for_update(key=key)
                        counter.n += 1
                        Stamp(message_id=mid, n=counter.n)
                        if fail:
                            raise _Rollback
                except _Rollback:
                    with lock:
                        rolled_back.append(mid)
                    break
                except Exception as exc:
                    if pk.classify_error(exc) == "transient":
                        continue
                    errors.append(exc)
                    return
                else:
                    with lock:
                        committed.append(mid)
                    break

    def relay_loop(relay: Relay) -> None:
        try:
            while True:
                finished = done.is_set()
                sent = relay.run_once()
                if finished and not sent:
                    return
        except BaseException as exc:
            errors.append(exc)

    relays = [Relay(db, publisher, batch_size=4, name=f"r{i}") for i in range(3)]
    relay_threads = [threading.Thread(target=relay_loop, args=(r,)) for r in relays]
    workers = [threading.Thread(target=business, args=(w,)) for w in range(4)]
    for t in [*relay_threads, *workers]:
        t.start()
    for t in workers:
        t.join()
    done.set()
    for t in relay_threads:
        t.join()
    assert not errors, errors
    published = publisher.ids()
    assert len(published) == len(set(published)), "a message was published twice"
    assert set(published) == set(committed)
    assert not set(published) & set(rolled_back)
    assert not publisher.overlaps
    with db_session:
        stamps = {s.message_id: s.n for s in Stamp.select()}
    _assert_key_order(publisher.messages, stamps)
    assert sum(r.sent for r in relays) == len(committed)


class _Rollback(Exception):
    pass


def _assert_key_order(messages: Sequence[Message], rank: dict[str, int]) -> None:
    last: dict[str | None, int] = {}
    for m in messages:
        if m.key is None:
            continue
        assert rank[m.id] > last.get(m.key, -1), f"key {m.key}: published out of commit order"
        last[m.key] = rank[m.id]


@pytest.mark.backends("postgres", "mysql")
def test_concurrent_transactions_on_one_key_are_published_in_commit_order(
    backend_name: str, make_db: Callable[[], Database]
) -> None:
    db = make_outbox_db(make_db)
    publisher = RecordingPublisher()
    relay = Relay(db, publisher)
    first_published = threading.Event()
    release_first = threading.Event()
    second_id: list[str] = []
    second_pid: list[int] = []

    def first() -> None:
        with db_session:
            publish("t", {"n": 1}, key="k", db=db)
            first_published.set()
            release_first.wait(WAIT)

    def second() -> None:
        with db_session:
            second_pid.append(_connection_id(db, backend_name))
            second_id.append(publish("t", {"n": 2}, key="k", db=db))

    t1 = threading.Thread(target=first)
    t1.start()
    assert first_published.wait(WAIT)
    t2 = threading.Thread(target=second)
    t2.start()
    wait_for(lambda: bool(second_pid), "the second transaction to start")
    wait_for(
        lambda: _waits_for_lock(db, backend_name, second_pid[0]), "the second transaction to wait for the key"
    )
    assert relay.run_once() == 0  # nothing of the key is committed; the claim skips the locked key
    release_first.set()
    t1.join()
    t2.join()
    assert drain(relay) == 2
    assert [orjson.loads(m.payload) for m in publisher.messages] == [{"n": 1}, {"n": 2}]


def _connection_id(db: Database, backend_name: str) -> int:
    return int(db.select("pg_backend_pid()" if backend_name == "postgres" else "connection_id()")[0])


def _waits_for_lock(db: Database, backend_name: str, pid: int) -> bool:
    with db_session:
        if backend_name == "postgres":
            sql = "count(*) FROM pg_stat_activity WHERE pid = $pid AND wait_event_type = 'Lock'"
        else:
            sql = (
                "count(*) FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = $pid "
                "AND trx_state = 'LOCK WAIT'"
            )
        return bool(db.select(sql, {"pid": pid})[0])


@pytest.mark.backends("postgres", "mysql")
def test_a_relay_killed_mid_batch_leaves_its_rows_to_the_next(
    backend_name: str, make_db: Callable[[], Database]
) -> None:
    db = make_outbox_db(make_db)
    with db_session:
        ids = [publish("t", {"i": i}, key=f"k{i % 2}") for i in range(4)]
    in_publish = threading.Event()
    resume = threading.Event()
    backend_pid: list[int] = []

    def hold(messages: Sequence[Message]) -> None:
        # Runs in the relay's transaction: note its connection, then wait while it is killed.
        backend_pid.append(_connection_id(db, backend_name))
        in_publish.set()
        resume.wait(WAIT)

    stuck = RecordingPublisher(before_confirm=hold)
    errors: list[BaseException] = []

    recovered: list[int] = []

    def run_stuck() -> None:
        relay = Relay(db, stuck, name="stuck")
        try:
            relay.run_once()
        except BaseException as exc:
            errors.append(exc)
        recovered.append(relay.run_once())  # the same relay goes on, on a new connection

    thread = threading.Thread(target=run_stuck)
    thread.start()
    assert in_publish.wait(WAIT)
    with db_session:
        if backend_name == "postgres":
            db.select("pg_terminate_backend($pid)", {"pid": backend_pid[0]})
        else:
            db.execute(f"KILL {backend_pid[0]}")
    wait_for(lambda: not _backend_alive(db, backend_name, backend_pid[0]), "the relay's connection to end")
    second = RecordingPublisher()
    assert drain(Relay(db, second, name="next")) == 4  # the killed relay's claims were released
    assert second.ids() == ids
    resume.set()
    thread.join()
    assert errors, "the killed relay must not report success"
    assert recovered == [0]  # nothing left: the other relay sent it all
    assert pending_count(db) == 0
    # Its broker did get the messages before the relay could mark them: at least once, so consumers
    # see them twice and deduplicate by id (inbox).
    assert stuck.ids() == ids


def _backend_alive(db: Database, backend_name: str, pid: int) -> bool:
    with db_session:
        if backend_name == "postgres":
            return bool(db.select("count(*) FROM pg_stat_activity WHERE pid = $pid", {"pid": pid})[0])
        return bool(
            db.select("count(*) FROM information_schema.processlist WHERE id = $pid", {"pid": pid})[0]
        )


@pytest.mark.backends("postgres")
def test_the_relay_wakes_up_on_notify(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    publisher = RecordingPublisher()
    relay = Relay(db, publisher, poll_interval=3600)  # without NOTIFY it would sleep for an hour
    thread = threading.Thread(target=relay.run)
    thread.start()
    try:
        for n in range(3):
            with db_session:
                publish("t", {"n": n}, key="k")
            wait_for(lambda n=n: len(publisher.messages) == n + 1, f"message {n} to be published")
    finally:
        relay.stop()
        thread.join()


def test_run_backs_off_while_the_broker_is_down_and_logs_without_payloads(
    make_db: Callable[[], Database], caplog: pytest.LogCaptureFixture
) -> None:
    db = make_outbox_db(make_db)
    with db_session:
        publish("t", {"secret": "PAYLOAD-VALUE-123"}, key="k")

    class Flaky(RecordingPublisher):
        name = "flaky"
        failures = 3

        def publish(self, messages: Sequence[Message]) -> None:
            if self.failures:
                self.failures -= 1
                raise PublishError("broker 'flaky' did not confirm")
            super().publish(messages)

    publisher = Flaky()
    relay = Relay(db, publisher, poll_interval=0.05, max_backoff=0.05, log_interval=0)
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="ponykit.outbox")
    thread = threading.Thread(target=relay.run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: len(publisher.messages) == 1, "the message to go out after the broker is back")
    finally:
        stop.set()
        thread.join()
    assert publisher.failures == 0
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "retry 3" in text and "publishing again after 3 failures" in text
    assert "messages in" in text and "oldest pending" in text  # progress lines
    assert "PAYLOAD-VALUE-123" not in text
    outbox = pk.outbox.outbox_entity(db)
    with db_session:
        assert outbox.select().first().attempts == 4


def test_prune_deletes_sent_rows_older_than_the_retention(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    with db_session:
        for i in range(5):
            publish("t", {"i": i})
    relay = Relay(db, RecordingPublisher(), batch_size=3)
    relay.run_once()  # 3 sent, 2 pending
    assert relay.prune() == 0  # sent just now: kept for the retention
    assert relay.prune(older_than=timedelta(0)) == 3
    assert pending_count(db) == 2
    outbox = pk.outbox.outbox_entity(db)
    with db_session:
        assert outbox.select().count() == 2


def test_relay_options_are_checked(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    with pytest.raises(OptionError, match="batch_size"):
        Relay(db, RecordingPublisher(), batch_size=0)
    with pytest.raises(OptionError, match="poll_interval"):
        Relay(db, RecordingPublisher(), poll_interval=-1)
    with pytest.raises(OptionError, match="publisher"):
        Relay(db, object())  # type: ignore[arg-type]
    assert "recording" in repr(Relay(db, RecordingPublisher(), name="r1"))


@pytest.mark.backends("postgres")
def test_the_listener_survives_a_killed_connection(make_db: Callable[[], Database]) -> None:
    from ponykit.outbox._notify import Listener

    db = make_outbox_db(make_db)
    listener = Listener(db, "test")
    try:
        assert listener.wait(0.01) is True  # a new LISTEN: look at the table once
        pid = listener._conn.get_backend_pid()
        with db_session:
            db.select("pg_terminate_backend($pid)", {"pid": pid})
        wait_for(lambda: not _backend_alive(db, "postgres", pid), "the listener's connection to end")
        assert listener.wait(1.0) is True  # the failure is noticed: the relay looks at the table
        assert listener._conn is None
        assert listener.wait(0.01) is False  # polling for a while, not reconnecting in a loop
        listener._failed_at -= 60  # later: it connects again
        assert listener.wait(0.01) is True
        with db_session:
            publish("t", {}, db=db)
        wait_for(lambda: listener.wait(0.2), "the notification of the commit")
    finally:
        listener.close()


@pytest.mark.backends("postgres", "mysql")
def test_a_second_relay_finds_work_while_the_first_holds_its_claims(make_db: Callable[[], Database]) -> None:
    # 100 keys, batches of 500: a relay claims about the keys that fill its batch, not all 100.
    db = make_outbox_db(make_db)
    with db_session:
        for i in range(2000):
            publish("t", {"i": i}, key=f"k{i % 100}")
    second_sent: list[int] = []
    second = RecordingPublisher()

    def while_holding(messages: Sequence[Message]) -> None:
        # Runs inside the first relay's transaction, its key claims held: another relay (its own thread,
        # its own connection) runs a batch.
        if not second_sent:
            thread = threading.Thread(target=lambda: second_sent.append(Relay(db, second).run_once()))
            thread.start()
            thread.join(WAIT)

    first = RecordingPublisher(before_confirm=while_holding)
    Relay(db, first, name="first", batch_size=500).run_once()
    assert second_sent and second_sent[0] > 0
    first_keys = {m.key for m in first.messages}
    second_keys = {m.key for m in second.messages}
    assert first_keys and second_keys and not first_keys & second_keys  # never one key on both
    drain(Relay(db, RecordingPublisher()))
    assert pending_count(db) == 0
