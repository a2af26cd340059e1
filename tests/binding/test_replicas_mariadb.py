"""Read replicas on MariaDB: GTID pins, MASTER_GTID_WAIT, fall-back when the replica is down or stops
applying, writes refused before any SQL, and pin tokens carrying GTID positions.

The server tests run against the self-contained MariaDB pair of ``.ci/mariadb-replica.sh`` (primary
3307 with a binary log, replica 3308 replicating with ``MASTER_USE_GTID=slave_pos``), through the
``mariadb_replica_control`` fixture: each test gets its own database on the primary, replicated.
"""

from __future__ import annotations

import contextvars
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from _pin_checks import pins_after, writes_of_every_kind
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import Database, OptimisticCheckError, PrimaryKey, Required, commit, db_session, flush

import ponykit as pk
from ponykit.binding import ReplicaConfig, current_pin, replica_session, replica_status, use_pin
from ponykit.binding._gtid import Gtid, parse_gtid
from ponykit.binding._pins import record_pin, token_pins

KEY = "0123456789ab"

# ---------------------------------------------------------------------------------------------------------
# GTID positions and tokens (no server)

triples = st.dictionaries(
    st.integers(0, 2**32 - 1), st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)), max_size=4
).map(lambda d: Gtid(tuple((dom, s, n) for dom, (s, n) in d.items())))


@given(triples)
def test_gtid_text_round_trip(gtid: Gtid) -> None:
    assert parse_gtid(str(gtid)) == gtid
    assert gtid >= gtid and gtid <= gtid and not gtid > gtid


def test_gtid_covering_is_per_domain() -> None:
    pin = parse_gtid("0-1-10,1-3-5")
    assert parse_gtid("0-1-10,1-3-5") >= pin
    assert parse_gtid("0-2-11,1-3-9") >= pin  # another server id in a domain: its sequence counts
    assert not parse_gtid("0-1-12") >= pin  # domain 1 missing
    assert not parse_gtid("0-1-9,1-3-20") >= pin
    assert parse_gtid("0-1-12,1-3-5") > pin and pin < parse_gtid("0-1-12,1-3-5")
    nothing = -1  # what a replica's health starts from: nothing replayed yet
    assert pin >= nothing and not pin <= nothing and parse_gtid("") <= nothing
    assert parse_gtid("0-1-3").merged(parse_gtid("0-1-2,1-1-4")) == parse_gtid("0-1-3,1-1-4")
    for bad in ("0-1", "a-b-c", "0-1-2,0-1-3", "0-1-2;DROP"):
        with pytest.raises(ValueError, match="GTID"):
            parse_gtid(bad)


def test_tokens_carry_gtids_next_to_wal_positions() -> None:
    other = "ba9876543210"
    with use_pin():
        record_pin(KEY, parse_gtid("0-1-41"))
        record_pin(KEY, parse_gtid("0-1-42"))
        record_pin(KEY, parse_gtid("0-1-40"))  # an older commit never moves the pin back
        record_pin(other, 0x16B374D848)  # a PostgreSQL primary in the same scope
        plain, signed = current_pin(), current_pin(secret="s3cret")
    assert plain is not None and signed is not None
    expected = {KEY: parse_gtid("0-1-42"), other: 0x16B374D848}
    assert token_pins(plain) == expected
    assert token_pins(signed, secret="s3cret") == expected
    assert token_pins(signed, secret="other") is None
    assert token_pins(plain, secret="s3cret") is None
    prefix, payload, mac = signed.split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    assert token_pins(f"{prefix}.{flipped}.{mac}", secret="s3cret") is None  # tampered payload


@pytest.mark.parametrize(
    "body", ['{"0123456789ab":[[0,1]]}', '{"0123456789ab":[]}', '{"0123456789ab":[[0,1,true]]}', "[1]"]
)
def test_malformed_gtid_tokens_are_ignored(body: str) -> None:
    import base64

    payload = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
    assert token_pins(f"pk1.{payload}") is None


def test_replicas_refused_on_sqlite() -> None:
    with pytest.raises(pk.UnsupportedDatabase, match="MariaDB GTID replicas"):
        pk.bind_url(Database(), "sqlite:///:memory:", replicas=["sqlite:///:memory:"])


# ---------------------------------------------------------------------------------------------------------
# against the MariaDB pair


def define(db: Database) -> Any:
    class Account(db.Entity):
        id = PrimaryKey(int)
        value = Required(int)
        note = Required(str, default="-")

    return Account


def on_replica(db: Database) -> bool:
    """True when the current session's connection is the replica's (server_id 2 in the pair)."""
    return int(db.select("SELECT @@server_id")[0]) == 2


@pytest.fixture
def mpair(mariadb_replica_control: Any) -> Iterator[Callable[..., tuple[Database, Any]]]:
    """Make a Database bound to a fresh database on the pair's primary with its replica."""
    made: list[Database] = []
    control = mariadb_replica_control

    def make(*, accounts: int = 0, **options: Any) -> tuple[Database, Any]:
        primary, replica = control.database()
        db = Database()
        config = options.pop("config", None)
        replicas = ReplicaConfig(urls=(replica,), **config) if config else [replica]
        pk.bind_url(db, primary, replicas=replicas, **options)
        made.append(db)
        account = define(db)
        pk.attach(db)
        db.generate_mapping(create_tables=True)
        with db_session:
            for i in range(accounts):
                account(id=i, value=0)
        control.wait_caught_up()
        return db, account

    yield make
    for db in made:
        db.disconnect()


def _wait_until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``check`` until true; fail after ``timeout`` seconds (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not reached within {timeout} s")
        time.sleep(0.02)


def test_reads_go_to_the_replica_and_writes_pin_a_gtid(mpair: Any) -> None:
    db, account = mpair(accounts=1)
    with db_session:
        assert not on_replica(db)
    with replica_session():
        assert on_replica(db)
        assert account[0].value == 0
    with pk.transaction(read_only=True, db=db):
        assert on_replica(db)
    with use_pin():
        with db_session:
            account[0].value = 3
        token = current_pin()
    assert token is not None
    pins = token_pins(token)
    assert pins is not None and len(pins) == 1
    (gtid,) = pins.values()
    assert isinstance(gtid, Gtid) and gtid.triples[0][:2] == (0, 1)  # domain 0, the primary's server_id 1
    status = replica_status(db)
    assert status["sessions"]["replica"] == 2 and status["pins"] >= 1
    assert status["replicas"][0]["replayed"].startswith("0-1-")


def test_writes_in_replica_sessions_raise_before_any_sql(mpair: Any) -> None:
    db, account = mpair(accounts=1)
    statements: list[str] = []
    pk.get_kit(db).add_execute_listener(lambda _db, sql, *_: statements.append(sql))
    for attempt in (
        lambda: account(id=5, value=5),
        lambda: setattr(account[0], "value", 7),
        lambda: db.execute("DELETE FROM account"),
        lambda: account.select().for_update()[:],
    ):
        statements.clear()
        with pytest.raises(pk.ReadOnlySessionError, match="Nothing was sent"), replica_session():
            attempt()
            flush()
        assert not any(s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")) for s in statements)
    with db_session:
        assert account.select().count() == 1
        assert account[0].value == 0


def test_read_your_writes_oracle(mpair: Any, mariadb_replica_control: Any) -> None:
    """300 write-then-read sequences over 15 threads against a replica that applies 1 s late
    (MASTER_DELAY = 1): every read sees the reader's own last write (0 stale) and part of the reads are
    served by the replica (the share is printed). Readers pause 0, 0.5 or 1.5 s between write and read."""
    threads, sequences = 15, 300
    db, account = mpair(accounts=threads, pool=pk.PoolConfig(max_size=8, timeout=30))
    mariadb_replica_control.set_apply_delay(1)
    stale: list[tuple[int, int, int]] = []
    served = {"replica": 0, "primary": 0}
    lock = threading.Lock()

    def user(me: int) -> None:
        rng = random.Random(me)
        with use_pin():
            for k in range(1, sequences // threads + 1):
                with db_session:
                    account[me].value = k
                threading.Event().wait(rng.choice((0.0, 0.5, 1.5)))
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
        f"\nMariaDB read-your-writes oracle: {total} reads, {len(stale)} stale, replica share {share:.1%}, "
        f"routing {replica_status(db)['sessions']}"
    )
    assert total == sequences
    assert stale == []
    assert served["replica"] > 0


def test_naive_routing_reads_stale_data(mpair: Any, mariadb_replica_control: Any) -> None:
    """Without pins (every read on the replica, as a router ignoring lag does) reads right after one's
    own writes are stale."""
    db, account = mpair(accounts=4)
    mariadb_replica_control.set_apply_delay(1)
    stale = 0
    for k in range(1, 21):
        with db_session:
            account[k % 4].value = k
        with use_pin(None), replica_session():
            assert on_replica(db)
            stale += account[k % 4].value != k
    print(f"\nMariaDB naive routing: {stale} stale reads out of 20")
    assert stale > 0


def test_pinned_reader_waits_with_master_gtid_wait(mpair: Any, mariadb_replica_control: Any) -> None:
    """With pin_wait above the delay a pinned reader waits (MASTER_GTID_WAIT) and reads its write on the
    replica; with pin_wait=0 it reads on the primary."""
    db, account = mpair(accounts=1, config={"pin_wait": 5.0})
    # MASTER_DELAY counts whole seconds from the event's whole-second timestamp: 2 means 1 to 2 s, so the
    # second write is surely not applied yet when it is read at once.
    mariadb_replica_control.set_apply_delay(2)
    with use_pin():
        with db_session:
            account[0].value = 1
        with replica_session():
            assert on_replica(db)
            assert account[0].value == 1
        with db_session:
            account[0].value = 2
        db.provider.pool.config = ReplicaConfig(urls=db.provider.pool.config.urls, pin_wait=0.0)
        with replica_session():
            assert not on_replica(db)
            assert account[0].value == 2
    assert replica_status(db)["sessions"]["primary:pinned"] == 1


def test_replica_stopped_in_the_middle_of_a_run(mpair: Any, mariadb_replica_control: Any) -> None:
    """Readers see no error while the replica server is down (they fall back to the primary) and use it
    again once it is back."""
    db, account = mpair(accounts=1, config={"retry_after": 0.2, "retry_cap": 0.5})
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
        mariadb_replica_control.stop()
        before = reads["primary"]
        _wait_until(lambda: reads["primary"] > before + 20)
        mariadb_replica_control.start()
        back = reads["replica"]
        _wait_until(lambda: reads["replica"] > back + 20, timeout=60)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert errors == []
    status = replica_status(db)
    print(f"\nMariaDB replica stopped mid-run: reads {reads}, routing {status['sessions']}")
    assert status["sessions"].get("primary:down", 0) > 0
    assert not status["replicas"][0]["down"]


def test_a_replica_that_stopped_applying_is_skipped(mpair: Any, mariadb_replica_control: Any) -> None:
    """A replica whose SQL thread stopped (SHOW SLAVE STATUS: Slave_SQL_Running = No) is lagging: readers
    go to the primary, and back to the replica once it applies again."""
    db, _account = mpair(accounts=1, config={"check_interval": 0.05})
    with use_pin(None), replica_session():
        assert on_replica(db)
    mariadb_replica_control.stop_applying()
    time.sleep(0.1)  # past check_interval: the next reader checks the replica's status

    def served_by(replica: bool) -> bool:
        with use_pin(None), replica_session():
            return on_replica(db) is replica

    _wait_until(lambda: served_by(False), timeout=10)
    assert replica_status(db)["replicas"][0]["lagging"]
    assert replica_status(db)["sessions"].get("primary:lagging", 0) > 0
    mariadb_replica_control._query(mariadb_replica_control.url, "START SLAVE")
    _wait_until(lambda: served_by(True), timeout=30)


def test_a_replica_behind_past_max_lag_is_skipped(mpair: Any, mariadb_replica_control: Any) -> None:
    """Seconds_Behind_Master past max_lag (here a 4 s MASTER_DELAY against max_lag=1) makes the replica
    lagging: unpinned readers go to the primary, and back to the replica once it caught up."""
    db, account = mpair(accounts=1, config={"max_lag": 1.0, "check_interval": 0.05})
    mariadb_replica_control.set_apply_delay(4)
    with db_session:
        account[0].value = 1  # waits 3 to 4 s on the replica: Seconds_Behind_Master grows past 1

    def served_by(replica: bool) -> bool:
        with use_pin(None), replica_session():
            return on_replica(db) is replica

    _wait_until(lambda: served_by(False), timeout=10)
    assert replica_status(db)["sessions"].get("primary:lagging", 0) > 0
    assert replica_status(db)["replicas"][0]["lag_seconds"] > 1.0
    _wait_until(lambda: served_by(True), timeout=30)  # applied: Seconds_Behind_Master is 0 again


def test_stale_read_then_update_is_an_optimistic_check_error(
    mpair: Any, mariadb_replica_control: Any
) -> None:
    """A session that read a stale row on the replica and moves to the primary to write it fails Pony's
    optimistic check instead of overwriting the newer value (a lost update)."""
    # The replica applies 20 s late (a bound well within max_lag) so that its row stays stale.
    db, account = mpair(accounts=1, config={"max_lag": 120.0})
    mariadb_replica_control.set_apply_delay(20)
    with db_session:
        account[0].value = 1  # on the primary; the replica still has 0
    with pytest.raises(OptimisticCheckError), use_pin(None), replica_session(on_write="primary"):
        row = account[0]
        assert row.value == 0  # the stale read
        assert on_replica(db)
        row.value = row.value + 10  # a read-modify-write from stale data
        commit()
    with db_session:
        assert account[0].value == 1  # the newer value survived


def test_gtid_token_carries_the_pin_to_the_next_request(mpair: Any, mariadb_replica_control: Any) -> None:
    """A signed token with the GTID pin gives read-your-writes in another context (the next request); a
    tampered or wrongly signed one is ignored (no pin: the delayed replica serves a stale row)."""
    db, account = mpair(accounts=1)
    mariadb_replica_control.set_apply_delay(20)
    with use_pin():
        with db_session:
            account[0].value = 7
        token = current_pin(secret="k")
    assert token is not None

    def next_request(token: str | None, secret: str) -> tuple[int, bool]:
        with use_pin(token, secret=secret), replica_session():
            return account[0].value, on_replica(db)

    assert contextvars.Context().run(next_request, token, "k") == (7, False)  # pinned: the primary
    prefix, payload, mac = token.split(".")
    tampered = f"{prefix}.{payload[:-1]}{'A' if payload[-1] != 'A' else 'B'}.{mac}"
    assert contextvars.Context().run(next_request, tampered, "k") == (0, True)
    assert contextvars.Context().run(next_request, token, "wrong") == (0, True)


def test_only_commits_that_wrote_pin_the_reader(mpair: Any, mariadb_replica_control: Any) -> None:
    """Pony commits every session on MariaDB, reads included: those commits leave no pin (no
    ``@@gtid_binlog_pos`` query, and the reader's next replica reads do not wait for other clients'
    writes). Every kind of write pins; without attach() every commit does."""
    db, account = mpair(accounts=2)

    def read() -> None:
        with db_session:
            assert account[0].value == 0
            assert not on_replica(db)

    assert pins_after(db, read) == (False, 0)
    for write in writes_of_every_kind(db, account):
        assert pins_after(db, write) == (True, 1), write.__name__

    primary, replica = mariadb_replica_control.database()
    plain = Database()
    pk.bind_url(plain, primary, replicas=[replica])
    try:
        define(plain)
        plain.generate_mapping(create_tables=True)
        with use_pin():
            with db_session:
                plain.select("SELECT 1")
            assert current_pin() is not None  # not attached: nothing tells a read from a write
    finally:
        plain.disconnect()


@pytest.mark.parametrize("via", ["execute", "select"])
def test_a_read_calling_a_writing_function_pins_the_reader(mpair: Any, via: str) -> None:
    """Pony commits every MariaDB session: a SELECT of a stored function that writes must still pin."""
    db, _account = mpair(accounts=2)
    with db_session:
        db.execute(
            "CREATE FUNCTION bump(n INT) RETURNS INT MODIFIES SQL DATA DETERMINISTIC "
            "BEGIN UPDATE account SET value = n WHERE id = 1; RETURN n; END"
        )

    def write() -> None:
        with db_session:
            getattr(db, via)("SELECT bump(7)")

    assert pins_after(db, write) == (True, 1)
    with db_session:
        assert db.select("SELECT value FROM account WHERE id = 1")[0] == 7
