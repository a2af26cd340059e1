"""transaction(): isolation per transaction, real read transactions, retries and their callbacks, logging.

On every backend unless marked. Transient failures are real: PostgreSQL raises 40001 from the server
(``RAISE ... USING ERRCODE``), MariaDB 1213 (``SIGNAL ... SET MYSQL_ERRNO``; unlike a real deadlock it does
not roll anything back, so only ponykit's own rollback keeps attempt 1's writes out), SQLite reports
"database is locked" to a second connection that wants the write lock the transaction holds.

SQLite: every ``transaction()`` there is ``BEGIN IMMEDIATE``, so it holds the write lock from its start:
another connection can neither commit nor start writing until it ends (it waits, or with ``timeout=0``
fails at once with "database is locked", a transient error). Whatever level is asked for, a SQLite
transaction is serializable, and the snapshot test checks exactly that: the writer is refused, the two
reads agree.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pony.orm import Database, Required, TransactionIntegrityError, db_session, flush

import ponykit as pk

WAIT = 30.0
FAST = pk.Backoff(base=0.001, cap=0.005)
SECRET = "s3cr3t-Ünïcode-value"


def make_schema(db: Database) -> tuple[Any, Any]:
    class Account(db.Entity):
        name = Required(str, unique=True)
        balance = Required(int)

    class Note(db.Entity):
        text = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        Account(name="a", balance=0)
    return Account, Note


@pytest.fixture
def schema(db: Database) -> tuple[Database, Any, Any]:
    account, note = make_schema(db)
    return db, account, note


def sqlite_file(backend: Any) -> str:
    return str(pk.parse_url(backend.url)[1]["filename"])


def fail_transiently(backend: Any, db: Database) -> None:
    """Raise a real transient error inside the current transaction (see the module docstring)."""
    if backend.name == "postgres":
        db.execute("DO $$$$ BEGIN RAISE EXCEPTION 'retry me' USING ERRCODE = '40001'; END $$$$")
    elif backend.name == "mysql":
        db.execute("SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'retry me'")
    else:
        flush()  # the transaction holds the write lock from BEGIN IMMEDIATE on
        other = sqlite3.connect(sqlite_file(backend), timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()
    pytest.fail("the statement was expected to fail with a transient error")


def balance(db: Database) -> int:
    return int(db.select("SELECT balance FROM account WHERE name = 'a'")[0])


def notes(note: Any) -> list[str]:
    with db_session:
        return sorted(n.text for n in note.select())


def in_thread(fn: Callable[[], Any]) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------------------------------------------
# One snapshot, and nothing leaks into the next session


def test_repeatable_read_read_only_sees_one_snapshot(backend: Any, schema: tuple[Database, Any, Any]) -> None:
    """Two SELECTs of one read-only repeatable_read transaction agree while another thread writes between.

    PostgreSQL and MariaDB: the other thread commits between the two reads, and the second read still
    shows the old value. SQLite: the other connection cannot commit at all while the transaction is open
    (it fails with "database is locked"), which is the same guarantee, got by locking.
    """
    db, account, _ = schema
    first_read, written = threading.Event(), threading.Event()
    outcome: list[Any] = []

    def writer() -> None:
        try:
            assert first_read.wait(WAIT)
            if backend.name == "sqlite":
                conn = sqlite3.connect(sqlite_file(backend), timeout=0, isolation_level=None)
                try:
                    conn.execute("UPDATE account SET balance = 99 WHERE name = 'a'")
                finally:
                    conn.close()
            else:
                with db_session:
                    account.get(name="a").balance = 99
            outcome.append("committed")
        except Exception as exc:
            outcome.append(exc)
        finally:
            db.disconnect()
            written.set()

    thread = in_thread(writer)
    with pk.transaction(isolation="repeatable_read", read_only=True, db=db):
        before = balance(db)
        first_read.set()
        assert written.wait(WAIT)
        after = balance(db)
    thread.join(WAIT)
    assert (before, after) == (0, 0)
    if backend.name == "sqlite":
        [error] = outcome
        assert isinstance(error, sqlite3.OperationalError) and "database is locked" in str(error)
        assert pk.classify_error(error) == "transient"
    else:
        assert outcome == ["committed"]
        with db_session:
            assert balance(db) == 99  # the write was real, the transaction just did not see it


@pytest.mark.backends("postgres")
def test_plain_db_session_on_postgres_reads_two_snapshots(schema: tuple[Database, Any, Any]) -> None:
    """Contrast (peers-2.md P6): Pony reads in autocommit on PostgreSQL, so the same two SELECTs differ."""
    db, account, _ = schema
    with db_session:
        before = balance(db)
        thread = in_thread(lambda: _bump(db, account))
        thread.join(WAIT)
        after = balance(db)
    assert (before, after) == (0, 99)


def _bump(db: Database, account: Any) -> None:
    try:
        with db_session:
            account.get(name="a").balance = 99
    finally:
        db.disconnect()


def connection_id(db: Database, backend_name: str) -> Any:
    sql = {
        "postgres": "SELECT pg_backend_pid()",
        "mysql": "SELECT CONNECTION_ID()",
        "sqlite": "SELECT 1",  # one connection per thread in Pony's SQLite pool
    }[backend_name]
    return db.select(sql)[0]


@pytest.mark.backends("postgres")
def test_postgres_level_does_not_leak(schema: tuple[Database, Any, Any]) -> None:
    """The level, read-only and deferrable flags hold inside; the next db_session on the same connection
    runs with the server's defaults."""
    db, _, note = schema
    setting = "SELECT current_setting('transaction_{}')"
    with pk.transaction(isolation="serializable", read_only=True, deferrable=True, db=db):
        inside = [db.select(setting.format(name))[0] for name in ("isolation", "read_only", "deferrable")]
        pid = connection_id(db, "postgres")
    assert inside == ["serializable", "on", "on"]
    with db_session:
        note(text="plain")
        flush()  # now in a transaction of Pony's own
        assert connection_id(db, "postgres") == pid
        after = [db.select(setting.format(name))[0] for name in ("isolation", "read_only", "deferrable")]
    assert after == ["read committed", "off", "off"]


@pytest.mark.backends("mysql")
def test_mysql_level_does_not_leak(
    backend: Any, schema: tuple[Database, Any, Any], connect_raw: Callable[[], Any]
) -> None:
    """SERIALIZABLE holds inside (InnoDB turns plain SELECTs into shared locks: another connection's
    UPDATE of the row times out), and the next db_session on the same connection is back to the
    server's REPEATABLE READ (the same UPDATE goes through at once)."""
    db, _, _ = schema
    other = connect_raw()
    with other.cursor() as cur:
        cur.execute("SET SESSION innodb_lock_wait_timeout = 1")

    def update_from_other() -> Any:
        try:
            with other.cursor() as cur:
                cur.execute("UPDATE account SET balance = balance + 1 WHERE name = 'a'")
            other.commit()
            return "updated"
        except Exception as exc:
            other.rollback()
            return exc.args[0]

    with pk.transaction(isolation="serializable", db=db):
        balance(db)
        conn_id = connection_id(db, "mysql")
        assert update_from_other() == 1205  # our SELECT holds a shared lock on the row
    with db_session:
        balance(db)
        assert connection_id(db, "mysql") == conn_id
        assert update_from_other() == "updated"
        assert db.select("SELECT @@tx_isolation, @@tx_read_only")[0] == ("REPEATABLE-READ", 0)


@pytest.fixture
def connect_raw(backend: Any) -> Iterator[Callable[[], Any]]:
    opened: list[Any] = []

    def make() -> Any:
        provider, kwargs = pk.parse_url(backend.url)
        assert provider == "mysql"
        import pymysql

        renames = {"db": "database", "passwd": "password"}
        conn = pymysql.connect(**{renames.get(k, k): v for k, v in kwargs.items()})
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()


READ_ONLY_CODES = {"postgres": "25006", "mysql": 1792, "sqlite": sqlite3.SQLITE_READONLY}


def test_read_only_refuses_writes_and_does_not_leak(backend: Any, schema: tuple[Database, Any, Any]) -> None:
    """A write in ``transaction(read_only=True)`` fails with the server's read-only error, is not retried,
    writes nothing; the next plain db_session on the thread's connection writes normally."""
    db, _, note = schema
    runs: list[int] = []

    @pk.transaction(read_only=True, retry=3, backoff=FAST, db=db)
    def sneaky() -> None:
        runs.append(1)
        note(text="sneaky")
        flush()

    with pytest.raises(Exception, match=r"(?i)read.?only") as info:
        sneaky()
    assert len(runs) == 1
    assert pk.classify_error(info.value) == "fatal"
    original = info.value
    while type(original).__module__.split(".")[0] not in ("psycopg2", "pymysql", "sqlite3"):
        original = original.original_exc  # Pony's wrappers (UnexpectedError, dbapiprovider errors)
    code = {
        "postgres": getattr(original, "pgcode", None),
        "mysql": original.args[0] if original.args else None,
        "sqlite": getattr(original, "sqlite_errorcode", None),
    }[backend.name]
    assert code == READ_ONLY_CODES[backend.name], repr(info.value)
    with db_session:
        note(text="plain")
    assert notes(note) == ["plain"]


@pytest.mark.backends("postgres")
def test_postgres_read_transaction_is_real(schema: tuple[Database, Any, Any]) -> None:
    """A transaction() that only reads is one server transaction: one txid for two SELECTs; SAVEPOINT works.

    In a plain db_session the same two SELECTs run in autocommit, each in a transaction of its own.
    """
    db, _, _ = schema
    with pk.transaction(db=db):
        first = db.select("SELECT txid_current()")[0]
        second = db.select("SELECT txid_current()")[0]
        db.execute("SAVEPOINT probe")
        db.execute("ROLLBACK TO SAVEPOINT probe")
        assert db.select("SELECT txid_current()")[0] == first
    assert first == second
    with db_session:
        plain = [db.select("SELECT txid_current()")[0] for _ in range(2)]
    assert plain[0] != plain[1]


# ---------------------------------------------------------------------------------------------------------
# Retries


@pytest.mark.parametrize("isolation", [None, "read_committed", "repeatable_read", "serializable"])
def test_retry_after_a_real_transient_error(
    backend: Any, schema: tuple[Database, Any, Any], isolation: str | None
) -> None:
    """Attempt 1 writes, registers callbacks and fails transiently; attempt 2 commits.

    The failed attempt's write is rolled back and its on_commit never runs (its on_rollback does); the
    successful attempt's on_commit runs once.
    """
    db, _, note = schema
    log: list[str] = []

    @pk.transaction(retry=2, backoff=FAST, isolation=isolation, db=db)  # type: ignore[arg-type]
    def work() -> int:
        run = len([e for e in log if e.startswith("run")]) + 1
        log.append(f"run {run}")
        note(text=f"run {run}")
        flush()
        pk.on_commit(lambda: log.append(f"commit {run}"), db=db)
        pk.on_rollback(lambda: log.append(f"rollback {run}"), db=db)
        if run == 1:
            fail_transiently(backend, db)
        return run

    assert work() == 2
    assert log == ["run 1", "rollback 1", "run 2", "commit 2"]
    assert notes(note) == ["run 2"]


def test_retrying_loop(backend: Any, schema: tuple[Database, Any, Any]) -> None:
    """``for attempt in retrying(...): with attempt:`` runs the block again after a transient error."""
    db, _, note = schema
    numbers: list[int] = []
    for attempt in pk.retrying(retry=3, backoff=FAST, db=db):
        with attempt:
            numbers.append(attempt.number)
            note(text=f"loop {attempt.number}")
            flush()
            if attempt.number == 1:
                fail_transiently(backend, db)
    assert numbers == [1, 2]
    assert notes(note) == ["loop 2"]


def test_retries_exhausted_carries_every_error(backend: Any, schema: tuple[Database, Any, Any]) -> None:
    """Every attempt fails transiently: RetriesExhausted holds each attempt's error, nothing is committed."""
    db, _, note = schema
    runs: list[int] = []

    @pk.transaction(retry=2, backoff=FAST, db=db)
    def doomed() -> None:
        runs.append(1)
        note(text="never")
        fail_transiently(backend, db)

    with pytest.raises(pk.RetriesExhausted) as info:
        doomed()
    error = info.value
    assert len(runs) == 3
    assert error.attempts == 3 and len(error.errors) == 3
    assert len({id(e) for e in error.errors}) == 3
    assert all(pk.classify_error(e) == "transient" for e in error.errors)
    assert error.__cause__ is error.errors[-1]
    assert error.waited >= 0.0
    assert pk.classify_error(error) == "fatal"  # a second loop around it must not retry again
    assert notes(note) == []


def test_fatal_errors_are_not_retried(schema: tuple[Database, Any, Any]) -> None:
    """An application error and a unique violation propagate unchanged after one run."""
    db, account, _ = schema
    runs: list[str] = []

    @pk.transaction(retry=3, backoff=FAST, db=db)
    def broken(kind: str) -> None:
        runs.append(kind)
        if kind == "app":
            raise ValueError("bad input")
        account(name="a", balance=1)  # "a" exists
        flush()

    with pytest.raises(ValueError, match="bad input"):
        broken("app")
    with pytest.raises(TransactionIntegrityError) as info:
        broken("duplicate")
    assert pk.classify_error(info.value) == "fatal"
    assert runs == ["app", "duplicate"]


def test_retry_inside_an_open_session_is_refused(schema: tuple[Database, Any, Any]) -> None:
    """retry>0 inside a db_session or transaction raises TransactionStateError before running anything."""
    db, _, note = schema
    runs: list[int] = []

    @pk.transaction(retry=2, db=db)
    def work() -> None:
        runs.append(1)

    with pytest.raises(pk.TransactionStateError), db_session:
        note(text="outer")
        work()
    with pytest.raises(pk.TransactionStateError), pk.transaction(db=db):
        work()
    with pytest.raises(pk.TransactionStateError), db_session:
        for attempt in pk.retrying(retry=2, db=db):
            with attempt:
                runs.append(2)
    with pytest.raises(pk.TransactionStateError), pk.transaction(retry=2, db=db):
        runs.append(3)
    assert runs == []
    assert notes(note) == []


def test_nested_transaction_joins(backend: Any, schema: tuple[Database, Any, Any]) -> None:
    """A nested transaction() without retry is part of the outer one: same transaction, commits with it,
    rolls back with it; its on_commit waits for the outer commit. A nested one cannot change the level."""
    db, _, note = schema
    log: list[str] = []

    @pk.transaction(db=db)
    def inner(text: str) -> Any:
        note(text=text)
        pk.on_commit(lambda: log.append(f"commit {text}"), db=db)
        return pk.transactions.transaction_id(db)

    with pk.transaction(db=db):
        outer_id = pk.transactions.transaction_id(db)
        assert inner("kept") == outer_id
        assert log == []
    assert log == ["commit kept"]

    with pytest.raises(ValueError, match="outer fails"), pk.transaction(db=db):
        inner("dropped")
        raise ValueError("outer fails after the inner block")
    assert notes(note) == ["kept"]
    assert log == ["commit kept"]

    with pytest.raises(pk.TransactionStateError), pk.transaction(db=db):
        note(text="outer")
        with pk.transaction(isolation="serializable", db=db):
            pass
    assert notes(note) == ["kept"]


# ---------------------------------------------------------------------------------------------------------
# Logging


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def tx_log() -> Iterator[Capture]:
    logger = logging.getLogger("ponykit.transactions")
    handler, level = Capture(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_logger_records_each_event_without_values(
    backend: Any, schema: tuple[Database, Any, Any], tx_log: Capture
) -> None:
    """begin, rollback, retry (with its wait), begin, commit: each with its attempt number; no values."""
    db, account, note = schema

    @pk.transaction(retry=2, backoff=FAST, db=db)
    def work() -> None:
        note(text=SECRET)
        account.get(name="a").balance = 4242
        flush()
        if len(tx_log.records) < 2:
            fail_transiently(backend, db)

    work()
    events = [(_event(r), getattr(r, "attempt", None)) for r in tx_log.records]
    assert events == [("begin", 1), ("rollback", 1), ("retry", 1), ("begin", 2), ("commit", 2)], events
    retry = tx_log.records[2]
    assert 0.0 <= retry.wait_s <= FAST.cap  # type: ignore[attr-defined]
    assert retry.error_class  # type: ignore[attr-defined]
    assert tx_log.records[-1].duration_ms >= 0.0  # type: ignore[attr-defined]
    for record in tx_log.records:
        text = record.getMessage() + repr(vars(record))
        assert SECRET not in text and "4242" not in text, text


def _event(record: logging.LogRecord) -> str:
    message = record.getMessage().lower()
    for word, event in (
        ("retrying", "retry"),
        ("begin", "begin"),
        ("rolled back", "rollback"),
        ("commit", "commit"),
    ):
        if word in message:
            return event
    return message
