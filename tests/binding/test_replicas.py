"""Read replicas: routing, read-your-writes pins, fall-back when a replica is down or lagging, and writes
refused (or moved to the primary) in read-only sessions.

The replica tests run against the real streaming replica of ``.ci/replica.sh`` (``replica_url``,
``replica_control``); each binds the primary with its isolated schema and the replica with the same
``search_path``. The tests that need no replica run on all three backends.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg2
import pytest
from _pin_checks import pins_after, writes_of_every_kind
from pony.orm import Database, OptimisticCheckError, PrimaryKey, Required, commit, db_session, flush

import ponykit as pk
from ponykit.binding import ReplicaConfig, current_pin, replica_session, replica_status, use_pin

# ---------------------------------------------------------------------------------------------------------
# helpers


def define(db: Database) -> Any:
    class Account(db.Entity):
        id = PrimaryKey(int)
        value = Required(int)
        note = Required(str, default="-")

    return Account


def on_replica(db: Database) -> bool:
    """True when the current session's connection is a standby's."""
    return bool(db.select("SELECT pg_is_in_recovery()")[0])


@pytest.fixture
def pair(backend: Any, replica_control: Any) -> Iterator[Callable[..., tuple[Database, Any]]]:
    """Make a Database bound to this test's primary schema with the replica (options: bind_url's)."""
    made: list[Database] = []

    def make(*, accounts: int = 0, **options: Any) -> tuple[Database, Any]:
        db = Database()
        config = options.pop("config", None)
        replicas = config or [replica_control.url_for(backend)]
        pk.bind_url(db, backend.url, replicas=replicas, **options)
        made.append(db)
        account = define(db)
        pk.attach(db)
        db.generate_mapping(create_tables=True)
        with db_session:
            for i in range(accounts):
                account(id=i, value=0)
        replica_control.wait_caught_up()
        return db, account

    yield make
    for db in made:
        db.disconnect()


# ---------------------------------------------------------------------------------------------------------
# on every backend: no replicas configured


def test_without_replicas_nothing_is_installed(db: Database) -> None:
    """bind_url() without replicas= leaves Pony's pool and provider methods alone: the no-replica path
    costs nothing."""
    provider = db.provider
    assert type(provider.pool).__module__.startswith("pony.")
    assert not {"commit", "set_transaction_mode", "should_reconnect"} & set(vars(provider))
    assert replica_status(db) == {}


def test_replica_session_without_replicas_reads_the_primary_and_refuses_writes(db: Database) -> None:
    """The same code runs in development without replicas: reads work, writes raise before any SQL."""
    account = define(db)
    kit = pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        account(id=1, value=10)
    statements: list[str] = []
    kit.add_execute_listener(lambda _db, sql, *_: statements.append(sql))
    with replica_session():
        assert account[1].value == 10
    statements.clear()
    with (
        pytest.raises(pk.ReadOnlySessionError, match=r"INSERT statement .*\(replica_session\(\)\)"),
        replica_session(),
    ):
        account(id=2, value=20)
    with pytest.raises(pk.ReadOnlySessionError, match="UPDATE statement"), replica_session():
        db.execute("UPDATE account SET value = 0")
    assert statements == []  # nothing reached the server
    with db_session:
        assert account.select().count() == 1
        assert account[1].value == 10


def test_replica_session_on_write_primary_without_replicas_writes(db: Database) -> None:
    account = define(db)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with replica_session(on_write="primary"):
        account(id=1, value=1)
    with db_session:
        assert account[1].value == 1


@pytest.mark.backends("sqlite")
def test_replicas_are_postgresql_or_mariadb_only(backend: Any) -> None:
    db = Database()
    with pytest.raises(pk.UnsupportedDatabase, match="PostgreSQL streaming replicas and MariaDB"):
        pk.bind_url(db, backend.url, replicas=[backend.url])
    assert db.provider is None  # refused before binding


def test_replica_config_repr_hides_passwords() -> None:
    config = ReplicaConfig(urls=("postgresql://app:s3cret-pw@replica.example/db",), max_lag=2.0)
    shown = repr(config)
    assert "s3cret-pw" not in shown and "s3cret-pw" not in str(config)
    assert "replica.example" in shown and "max_lag=2.0" in shown


def test_replica_options_are_checked() -> None:
    with pytest.raises(pk.OptionError, match="pin_wait"):
        ReplicaConfig(urls=("postgresql://h/db",), pin_wait=-1)
    with pytest.raises(pk.OptionError, match="on_write"):
        replica_session(on_write="ignore")
    with pytest.raises(pk.OptionError, match="list of URLs"):
        pk.bind_url(Database(), "sqlite:///:memory:", replicas="postgresql://h/db")  # type: ignore[arg-type]
    with pytest.raises(pk.OptionError, match="generator"):

        @replica_session()
        def rows() -> Iterator[int]:
            yield 1


def test_replica_url_password_never_in_messages(backend_name: str) -> None:
    del backend_name
    with pytest.raises(pk.ConfigurationError) as info:
        pk.bind_url(Database(), "postgresql://u:pw@h/db", replicas=["mysql://u:hunter2@h/db"])
    assert "hunter2" not in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# against the real replica


@pytest.mark.backends("postgres")
def test_reads_go_to_a_replica_and_everything_else_to_the_primary(pair: Any) -> None:
    db, account = pair(accounts=1)
    with db_session:
        assert not on_replica(db)
    with replica_session():
        assert on_replica(db)
        assert account[0].value == 0
    with pk.transaction(read_only=True, db=db):
        assert on_replica(db)
        assert db.select("SELECT current_setting('transaction_read_only')")[0] == "on"
    with pk.transaction(db=db):
        assert not on_replica(db)

    @replica_session()
    def read() -> bool:
        return on_replica(db)

    @replica_session()
    async def read_async() -> bool:  # no session on the loop: its run_in_session calls read replicas
        return await pk.run_in_session(on_replica, db)

    async def write_async() -> bool:
        return await pk.run_in_session(on_replica, db)

    assert read()
    assert asyncio.run(read_async())
    assert not asyncio.run(write_async())
    assert replica_status(db)["sessions"]["replica"] == 4


@pytest.mark.backends("postgres")
def test_writes_in_replica_sessions_raise_before_any_sql(pair: Any) -> None:
    db, account = pair(accounts=1)
    statements: list[str] = []
    pk.get_kit(db).add_execute_listener(lambda _db, sql, *_: statements.append(sql))
    for attempt in (
        lambda: account(id=5, value=5),  # a flush of a new object, at the end of the session
        lambda: setattr(account[0], "value", 7),  # an UPDATE after a read on the replica
        lambda: db.execute("DELETE FROM account"),  # raw SQL
        lambda: account.select().for_update()[:],  # a lock cannot be taken on a replica
    ):
        statements.clear()
        with pytest.raises(pk.ReadOnlySessionError, match="Nothing was sent"), replica_session():
            attempt()
            flush()
        assert not any(s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")) for s in statements)
    with (
        pytest.raises(pk.ReadOnlySessionError, match=r"transaction\(read_only=True\)"),
        pk.transaction(read_only=True, db=db),
    ):
        account[0].value = 9
    with db_session:
        assert account.select().count() == 1
        assert account[0].value == 0


@pytest.mark.backends("postgres")
def test_read_your_writes_oracle(pair: Any, replica_control: Any) -> None:
    """1,000 write-then-read sequences over 20 threads (8 pooled connections per server) against a
    replica that applies 500 ms late: every read sees the reader's own last write (0 stale), and part of
    the reads are served by the replica (the share is printed). Readers pause 0, 0.3 or 0.6 s between
    write and read, as users do."""
    threads, sequences = 20, 1000
    db, account = pair(accounts=threads, pool=pk.PoolConfig(max_size=8, timeout=30))
    replica_control.set_apply_delay(500)
    stale: list[tuple[int, int, int]] = []
    served = {"replica": 0, "primary": 0}
    lock = threading.Lock()

    def user(me: int) -> None:
        rng = random.Random(me)
        with use_pin():
            for k in range(1, sequences // threads + 1):
                with db_session:
                    account[me].value = k
                threading.Event().wait(rng.choice((0.0, 0.3, 0.6)))
                with replica_session():
                    seen, replica = account[me].value, on_replica(db)
                with lock:
                    served["replica" if replica else "primary"] += 1
                    if seen != k:
                        stale.append((me, k, seen))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(user, range(threads)))
    total = served["replica"] + served["primary"]
    share = served["replica"] / total
    print(
        f"\nread-your-writes oracle: {total} reads, 0 expected stale, {len(stale)} stale, "
        f"replica share {share:.1%}, routing {replica_status(db)['sessions']}"
    )
    assert total == sequences
    assert stale == []


@pytest.mark.backends("postgres")
def test_naive_routing_reads_stale_data(pair: Any, replica_control: Any) -> None:
    """The same harness without pins (every read on the replica, as a router ignoring lag does) reads
    stale values right after its own writes."""
    db, account = pair(accounts=4)
    replica_control.set_apply_delay(500)
    stale = 0
    for k in range(1, 26):
        with db_session:
            account[k % 4].value = k
        with use_pin(None), replica_session():  # a fresh scope: no pin, as a naive router
            assert on_replica(db)
            stale += account[k % 4].value != k
    print(f"\nnaive routing: {stale} stale reads out of 25")
    assert stale > 0


@pytest.mark.backends("postgres")
def test_pinned_reader_waits_for_the_replica_within_the_bound(
    pair: Any, backend: Any, replica_control: Any
) -> None:
    """With pin_wait above the replica's delay, a pinned reader waits and reads its own write there;
    with a short pin_wait it reads it on the primary."""
    url = replica_control.url_for(backend)
    db, account = pair(accounts=1, config=ReplicaConfig(urls=(url,), pin_wait=10.0))
    replica_control.set_apply_delay(300)
    with use_pin():
        with db_session:
            account[0].value = 1
        with replica_session():
            assert on_replica(db)
            assert account[0].value == 1
        with db_session:
            account[0].value = 2
        db.provider.pool.config = ReplicaConfig(urls=(url,), pin_wait=0.0)
        with replica_session():
            assert not on_replica(db)
            assert account[0].value == 2
    assert replica_status(db)["sessions"]["primary:pinned"] == 1


@pytest.mark.backends("postgres")
def test_replica_stopped_in_the_middle_of_a_run(pair: Any, backend: Any, replica_control: Any) -> None:
    """Readers see no error while the replica goes down (their sessions fall back to the primary) and
    use it again once it is back."""
    config = ReplicaConfig(urls=(replica_control.url_for(backend),), retry_after=0.2, retry_cap=0.5)
    db, account = pair(accounts=1, config=config)
    errors: list[BaseException] = []
    reads = {"replica": 0, "primary": 0}
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                with replica_session():
                    assert account[0].value == 0
                    reads["replica" if on_replica(db) else "primary"] += 1
            except BaseException as exc:
                errors.append(exc)
            stop.wait(0.005)

    workers = [threading.Thread(target=reader) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        _wait_until(lambda: reads["replica"] > 20)
        replica_control.stop()
        before = reads["primary"]
        _wait_until(lambda: reads["primary"] > before + 20)
        replica_control.start()
        back = reads["replica"]
        _wait_until(lambda: reads["replica"] > back + 20, timeout=60)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert errors == []
    status = replica_status(db)
    assert status["sessions"].get("primary:down", 0) > 0
    assert not status["replicas"][0]["down"]


@pytest.mark.backends("postgres")
def test_lagging_replica_is_skipped_and_used_again(backend: Any, replica_control: Any) -> None:
    db = Database()
    config = ReplicaConfig(urls=(replica_control.url_for(backend),), max_lag=0.3, check_interval=0.05)
    pk.bind_url(db, backend.url, replicas=config)
    account = define(db)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    replica_control.wait_caught_up()
    try:
        replica_control.set_apply_delay(5000)
        with db_session:
            account(id=1, value=1)  # a position the replica will not replay for 5 s

        def served_by_primary() -> bool:
            with use_pin(None), replica_session():
                return not on_replica(db)

        _wait_until(served_by_primary)
        assert replica_status(db)["replicas"][0]["lagging"]
        replica_control.set_apply_delay(0)

        def served_by_replica() -> bool:
            with use_pin(None), replica_session():
                return on_replica(db)

        _wait_until(served_by_replica, timeout=30)
        assert replica_status(db)["sessions"].get("primary:lagging", 0) > 0
    finally:
        db.disconnect()


@pytest.mark.backends("postgres")
def test_stale_read_then_update_is_an_optimistic_check_error(pair: Any, replica_control: Any) -> None:
    """A session that read a stale row on the replica and moves to the primary to write it fails Pony's
    optimistic check instead of overwriting the newer value (a lost update)."""
    db, account = pair(accounts=1)
    _replay(replica_control, pause=True)
    try:
        with db_session:
            account[0].value = 1  # on the primary; the paused replica still has 0
        with pytest.raises(OptimisticCheckError), use_pin(None), replica_session(on_write="primary"):
            row = account[0]
            assert row.value == 0  # the stale read
            assert on_replica(db)
            row.value = row.value + 10  # a read-modify-write from stale data
            commit()
    finally:
        _replay(replica_control, pause=False)
    with db_session:
        assert account[0].value == 1  # the newer value survived


@pytest.mark.backends("postgres")
def test_on_write_primary_moves_the_session_and_keeps_its_objects(pair: Any) -> None:
    db, account = pair(accounts=1)
    with use_pin(None), replica_session(on_write="primary"):
        row = account[0]
        assert on_replica(db)
        row.note = "moved"
        flush()
        assert not on_replica(db)
        assert row.value == 0  # the object loaded on the replica is still the session's
    with db_session:
        assert account[0].note == "moved"
    assert replica_status(db)["sessions"]["primary:moved"] == 1  # its reconnect took the primary
    with use_pin(None), replica_session(on_write="primary"):
        assert on_replica(db)
        db.execute("UPDATE account SET value = 42")  # raw SQL moves the session too (attach's check)
        assert not on_replica(db)
    with db_session:
        assert account[0].value == 42


@pytest.mark.backends("postgres")
def test_pins_follow_threads_and_async_tasks(pair: Any, replica_control: Any) -> None:
    """A commit in a run_in_session worker or a copied-context thread pins the scope that started it;
    the token carries the pin to another scope (the next request)."""
    db, account = pair(accounts=2)
    replica_control.set_apply_delay(1000)

    def write(i: int, value: int) -> None:
        with db_session:
            account[i].value = value

    async def request() -> str | None:
        with use_pin():
            await pk.run_in_session(write, 0, 5)
            return current_pin()

    token = asyncio.run(request())
    assert token is not None
    with use_pin(token), replica_session():
        assert account[0].value == 5  # read-your-writes in the next request, through the token
    with use_pin():
        context = contextvars.copy_context()
        worker = threading.Thread(target=context.run, args=(write, 1, 6))
        worker.start()
        worker.join()
        with replica_session():
            assert account[1].value == 6
    signed = None
    with use_pin():
        write(0, 7)
        signed = current_pin(secret="k")
    with use_pin(signed, secret="k"), replica_session():
        assert account[0].value == 7
    with use_pin(signed, secret="wrong"), replica_session():  # refused token: no pin, stale replica
        assert on_replica(db)
        assert account[0].value != 7


# ---------------------------------------------------------------------------------------------------------


def _wait_until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``check`` until true; fail after ``timeout`` seconds (a hang guard, not a timing assertion)."""
    import time

    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not reached within {timeout} s: {check.__name__}")
        time.sleep(0.02)


def _replay(control: Any, *, pause: bool) -> None:
    import psycopg2

    con = psycopg2.connect(control.url)
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute("SELECT pg_wal_replay_pause()" if pause else "SELECT pg_wal_replay_resume()")
    finally:
        con.close()


@pytest.mark.backends("postgres")
def test_a_full_replica_pool_sends_readers_to_the_primary(pair: Any) -> None:
    """With pool=, a replica whose bounded pool has no free connection is skipped, not marked down."""
    db, account = pair(accounts=1, pool=pk.PoolConfig(max_size=1, timeout=0))
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with use_pin(None), replica_session():
            assert on_replica(db)
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(30)
        with use_pin(None), replica_session():
            assert not on_replica(db)
            assert account[0].value == 0
    finally:
        release.set()
        holder.join()
    status = replica_status(db)
    assert status["sessions"]["primary:busy"] == 1
    assert not status["replicas"][0]["down"]
    with use_pin(None), replica_session():
        assert on_replica(db)


@pytest.mark.backends("postgres")
def test_a_replica_lagging_past_max_lag_is_skipped_under_a_steady_write_rate(
    pair: Any, backend: Any, replica_control: Any
) -> None:
    """max_lag=1 s, the replica applies 3 s late, this process commits steadily for 1.5 s (more commits
    than the marks Health keeps): an unpinned reader is not served stale data by the replica."""
    import time

    config = ReplicaConfig(urls=(replica_control.url_for(backend),), max_lag=1.0, check_interval=0.05)
    db, account = pair(accounts=1, config=config)
    replica_control.set_apply_delay(3000)
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < 1.5:
        n += 1
        with use_pin(), db_session:
            account[0].value = n
    time.sleep(0.1)  # a health check is due
    with use_pin(), replica_session():  # another user: no pin
        seen = account[0].value
        served_by_replica = on_replica(db)
    assert not (served_by_replica and seen < n - 64), (seen, n, replica_status(db))


@pytest.mark.backends("postgres")
def test_a_lagging_replica_is_skipped_when_only_another_process_writes(
    pair: Any, backend: Any, replica_control: Any
) -> None:
    """This process commits nothing (no marks): the replica's own age of its last replayed commit, while
    received WAL waits for replay, shows the lag."""
    import time

    config = ReplicaConfig(urls=(replica_control.url_for(backend),), max_lag=1.0, check_interval=0.0)
    db, account = pair(accounts=1, config=config)
    table = db.entities["Account"]._table_
    replica_control.set_apply_delay(30000)
    writer = Database()  # another process: its commits are not marked in this router's Health
    pk.bind_url(writer, backend.url)
    try:
        for value in (1, 2):  # commits 1.5 s apart: the last replayed one gets older than max_lag
            with db_session:
                writer.execute(f'UPDATE "{table}" SET value = {value} WHERE id = 0')
            if value == 1:
                time.sleep(1.5)
        _wait_until(lambda: _replica_received_more_than_replayed(replica_control))
        with use_pin(None), replica_session():
            _ = account[0].value  # the health check sees the lag (the first reader may still be served)
        with use_pin(None), replica_session():
            assert not on_replica(db), replica_status(db)
            assert account[0].value == 2
        assert replica_status(db)["replicas"][0]["lagging"]
    finally:
        writer.disconnect()


def _replica_received_more_than_replayed(control: Any) -> bool:
    import psycopg2

    con = psycopg2.connect(control.url)
    try:
        with con.cursor() as cur:
            cur.execute("SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()")
            return bool(cur.fetchone()[0])
    finally:
        con.close()


@pytest.mark.backends("postgres")
def test_a_probe_that_finds_the_replica_pool_full_leaves_the_next_probe_possible(pair: Any) -> None:
    """A down replica's probe that gets PoolTimeout ("busy") gave no answer: it must not keep the probe
    claimed for ever (the replica would never be used again although it is up)."""
    import time

    from ponykit import _pony

    db, account = pair(accounts=1, pool=pk.PoolConfig(max_size=1, timeout=0))
    replica = _pony.routes_reads(db).replicas[0]
    held, _ = replica.pool.connect()  # the replica's only connection is in use
    replica.health.failed(time.monotonic() - 3600)  # down, its retry time already past
    with use_pin(None), replica_session():
        assert account[0].value == 0  # the probe: PoolTimeout -> "busy", served by the primary
        assert not on_replica(db)
    assert not replica.health.probing
    replica.pool.release(held)
    with use_pin(None), replica_session():
        assert on_replica(db)  # probed again, up: used
    assert not replica_status(db)["replicas"][0]["down"]


@pytest.mark.backends("postgres")
def test_a_serializable_read_only_transaction_runs_on_the_primary(pair: Any) -> None:
    """A hot standby refuses SERIALIZABLE: such a read-only transaction goes to the primary, writes in it
    are still refused before any SQL."""
    db, account = pair(accounts=1)
    with pk.transaction(db=db, read_only=True, isolation="serializable", deferrable=True):
        assert account[0].value == 0
        assert not on_replica(db)
    with (
        pytest.raises(pk.ReadOnlySessionError),
        pk.transaction(db=db, read_only=True, isolation="serializable"),
    ):
        account[0].value = 1
    with pk.transaction(db=db, read_only=True):  # other isolation levels still use the replica
        assert on_replica(db)


@pytest.mark.backends("postgres")
def test_a_returning_replica_is_not_kept_down_by_dead_per_thread_connections(
    pair: Any, backend: Any, replica_control: Any
) -> None:
    """Without pool=, each thread keeps its replica connection (Pony's pool). After a replica restart, a
    probe through a thread's dead kept connection retries on a new one instead of counting as a failure
    (which would double the back-off while the replica is already back)."""
    import time

    from ponykit import _pony

    config = ReplicaConfig(urls=(replica_control.url_for(backend),), retry_after=0.2, retry_cap=60.0)
    db, account = pair(accounts=1, config=config)
    health = _pony.routes_reads(db).replicas[0].health

    def read() -> bool:
        with use_pin(None), replica_session():
            _ = account[0].value
            return on_replica(db)

    workers = [ThreadPoolExecutor(1) for _ in range(6)]  # one thread each, each keeping its connection
    try:
        assert all(w.submit(read).result() for w in workers)
        replica_control.stop()
        assert not workers[0].submit(read).result()  # worker 0 notices: down
        assert health.failures == 1
        replica_control.start()
        _wait_until(lambda: time.monotonic() > health.retry_at)  # a probe is due
        # worker 1 probes through its kept connection, dead since the restart: it retries on a new one
        assert workers[1].submit(read).result(), replica_status(db)
        assert health.failures == 0
        assert all(w.submit(read).result() for w in workers[2:])  # the others' dead connections too
    finally:
        for w in workers:
            w.shutdown()


@pytest.mark.backends("postgres")
def test_a_read_only_transaction_refuses_writes_to_its_database_only(pair: Any, tmp_path: Any) -> None:
    """transaction(db=db1, read_only=True) is a read intent for db1: a write to another attached
    Database in the same block goes through; a write to db1 is still refused before any SQL."""
    db, account = pair(accounts=1)
    other = Database()
    other.bind("sqlite", str(tmp_path / "other.db"), create_db=True)

    class Note(other.Entity):
        text = Required(str)

    pk.attach(other)
    other.generate_mapping(create_tables=True)
    try:
        with pk.transaction(db=db, read_only=True):
            assert account[0].value == 0
            assert on_replica(db)
            Note(text="seen")
            flush()
            other.execute("UPDATE note SET text = 'seen again'")
        with db_session:
            assert [n.text for n in Note.select()] == ["seen again"]
        with pytest.raises(pk.ReadOnlySessionError), pk.transaction(db=db, read_only=True):
            Note(text="kept")
            account[0].value = 1
        with db_session:
            assert account[0].value == 0
    finally:
        other.disconnect()


@pytest.mark.backends("postgres")
def test_a_full_replica_pool_does_not_make_readers_wait_the_pool_timeout(pair: Any) -> None:
    """pool=PoolConfig(timeout=60): a reader finding the replica's pool full reads from the primary at once
    (the holder gives its connection back only after that reader is done, so a reader waiting for it would
    end up on the replica)."""
    db, account = pair(accounts=1, pool=pk.PoolConfig(max_size=1, timeout=60))
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with use_pin(None), replica_session():
            assert on_replica(db)
            holding.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(30)
        with use_pin(None), replica_session():
            assert not on_replica(db)
            assert account[0].value == 0
    finally:
        done.set()
        holder.join()
    assert replica_status(db)["sessions"]["primary:busy"] == 1


@pytest.mark.backends("postgres")
def test_only_commits_that_wrote_pin_the_reader(pair: Any, replica_control: Any, backend: Any) -> None:
    """A commit that only read leaves no pin: a pin would cost a query and make the reader's next replica
    reads wait for other clients' writes. Every kind of write pins."""
    db, account = pair(accounts=2)

    def read_in_transaction() -> None:
        with pk.transaction(db=db):  # on the primary, and it COMMITs
            assert account[0].value == 0
            db.execute("SELECT 1")

    assert pins_after(db, read_in_transaction) == (False, 0)
    for write in writes_of_every_kind(db, account):
        assert pins_after(db, write) == (True, 1), write.__name__

    # Without attach() nothing counts the statements: every commit pins, as before
    plain = Database()
    pk.bind_url(plain, backend.url, replicas=[replica_control.url_for(backend)])
    try:
        define(plain)
        plain.generate_mapping(create_tables=False)
        with use_pin():
            with db_session:
                plain.execute("SELECT 1")  # starts a transaction that commits
            assert current_pin() is not None
    finally:
        plain.disconnect()


@pytest.mark.backends("postgres")
@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN ANALYSE UPDATE account SET value = 11 WHERE id = 1",  # the British spelling runs it too
        "EXPLAIN (COSTS OFF, TIMING OFF, SUMMARY OFF, ANALYZE) UPDATE account SET value = 12 WHERE id = 1",
        "SELECT 1; UPDATE account SET value = 13 WHERE id = 1",  # psycopg2 sends both
        "SELECT bump(14)",  # a read calling a function that writes
        "SELECT * INTO account_copy FROM account",  # a new table
    ],
)
def test_writes_that_read_like_selects_pin_the_reader(pair: Any, sql: str) -> None:
    """Statements whose text starts like a read but write commit with a pin all the same. (Through
    ``db.select()`` Pony sends a read outside any transaction on PostgreSQL: nothing commits, nothing can
    pin; docs/scaling.md says to send such a statement through ``db.execute()``.)"""
    db, _account = pair(accounts=2)
    with db_session:
        db.execute(
            "CREATE FUNCTION bump(n int) RETURNS int LANGUAGE sql AS "
            "'UPDATE account SET value = n WHERE id = 1 RETURNING value'"
        )

    def write() -> None:
        with db_session:
            db.execute(sql)

    assert pins_after(db, write) == (True, 1), sql


@pytest.mark.backends("postgres")
def test_read_your_writes_after_a_write_through_explain_analyse(pair: Any, replica_control: Any) -> None:
    """End to end with the replica's replay paused: the reader's own write is read from the primary."""
    db, _account = pair(accounts=2)
    con = psycopg2.connect(replica_control.url)
    con.autocommit = True
    try:
        con.cursor().execute("SELECT pg_wal_replay_pause()")
        with use_pin():
            with db_session:
                db.execute("EXPLAIN ANALYSE UPDATE account SET value = 99 WHERE id = 1")
            with replica_session():
                seen = db.select("SELECT value FROM account WHERE id = 1")[0]
        assert seen == 99
    finally:
        con.cursor().execute("SELECT pg_wal_replay_resume()")
        con.close()
