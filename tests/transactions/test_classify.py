"""classify_error over real errors: raised by the real drivers and by Pony, on every backend.

No database error here is built by hand. PostgreSQL errors come from a real deadlock, a real unique
violation, or ``RAISE ... USING ERRCODE`` (the server sends the SQLSTATE, psycopg2 builds its exception from
it as for any other error); MariaDB's from a real deadlock, a real lock wait timeout, a real duplicate key or
``SIGNAL SQLSTATE ... SET MYSQL_ERRNO``; SQLite's from two real connections to one file. Each is classified
as the driver raised it and as Pony hands it over (``pony.orm.dbapiprovider`` wrappers from
``db.execute``, ``TransactionIntegrityError`` from a flush), and both must agree.

What the verdicts mean: transient errors are worth running the whole transaction again for (deadlock,
serialization failure, lock wait timeout, busy SQLite, Pony's optimistic checks); fatal ones are not
(integrity errors, application errors), whatever their message says.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import (
    Database,
    OptimisticCheckError,
    Required,
    TransactionIntegrityError,
    UnrepeatableReadError,
    db_session,
    flush,
)
from pony.orm import dbapiprovider as pony_dbapi
from pony.orm.core import PartialCommitException  # not exported by pony.orm

import ponykit as pk
from ponykit.errors import AmbiguousCommitError, ConnectionLostError, RetriesExhausted

JOIN_TIMEOUT = 30.0


def make_schema(db: Database) -> Any:
    class Account(db.Entity):
        name = Required(str, unique=True)
        balance = Required(int)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        Account(name="a", balance=0)
        Account(name="b", balance=0)
    return Account


@pytest.fixture
def account(db: Database) -> Any:
    return make_schema(db)


def raw_connect(backend: Any, *, timeout: float = 5.0) -> Any:
    """A plain driver connection to the test's database, in the driver's default (transactional) mode."""
    provider, kwargs = pk.parse_url(backend.url)
    if provider == "sqlite":
        return sqlite3.connect(kwargs["filename"], timeout=timeout, isolation_level=None)
    if provider == "postgres":
        import psycopg2

        return psycopg2.connect(**kwargs)
    import pymysql

    renames = {"db": "database", "passwd": "password"}
    return pymysql.connect(**{renames.get(k, k): v for k, v in kwargs.items()})


@pytest.fixture
def connect(backend: Any) -> Iterator[Callable[..., Any]]:
    """``connect(**kw)``: raw connections closed at the end of the test."""
    opened: list[Any] = []

    def make(**kw: Any) -> Any:
        conn = raw_connect(backend, **kw)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()


def raised(fn: Callable[[], Any]) -> BaseException:
    """The exception ``fn()`` raises (the test fails if it raises none)."""
    try:
        fn()
    except BaseException as exc:
        return exc
    pytest.fail("expected the statement to fail, it succeeded")


def execute(conn: Any, sql: str) -> None:
    cur = conn.cursor()
    try:
        cur.execute(sql)
    finally:
        cur.close()


def pony_execute(db: Database, sql: str) -> BaseException:
    """Run ``sql`` through Pony's ``db.execute`` in a db_session; the (wrapped) error it raises."""

    def run() -> None:
        with db_session:
            db.execute(sql)

    return raised(run)


def assert_agree(wrapped: BaseException, expected: str) -> None:
    """Pony's wrapper and the driver error inside it get the same verdict."""
    assert isinstance(wrapped, pony_dbapi.DBException), type(wrapped)
    original = wrapped.original_exc
    assert type(original).__module__.split(".")[0] in ("psycopg2", "pymysql", "sqlite3")
    assert pk.classify_error(original) == expected
    assert pk.classify_error(wrapped) == expected


def cross_lock(connect: Callable[..., Any], first: tuple[str, str], second: tuple[str, str]) -> BaseException:
    """A real deadlock: two connections each lock one row, then each asks for the other's row.

    ``first``/``second`` are the two statements each connection runs, in order; a barrier makes sure both
    hold their first lock before either asks for the second. Returns the error of the victim.
    """
    conns = [connect(), connect()]
    barrier = threading.Barrier(2, timeout=JOIN_TIMEOUT)
    errors: list[BaseException] = []

    def run(conn: Any, statements: tuple[str, str]) -> None:
        try:
            execute(conn, statements[0])
            barrier.wait()
            execute(conn, statements[1])
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.rollback()

    threads = [threading.Thread(target=run, args=args) for args in zip(conns, (first, second), strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "the deadlock was not broken by the server"
    assert len(errors) == 1, errors  # exactly one victim; the other transaction went through
    return errors[0]


UPDATE_A = "UPDATE account SET balance = balance + 1 WHERE name = 'a'"
UPDATE_B = "UPDATE account SET balance = balance + 1 WHERE name = 'b'"


# ---------------------------------------------------------------------------------------------------------
# Every backend


def test_real_deadlock_is_transient(backend: Any, account: Any, connect: Callable[..., Any]) -> None:
    """Two connections locking two rows in opposite order: the victim's error is transient.

    PostgreSQL reports 40P01 after deadlock_timeout, MariaDB 1213 at once. SQLite has no row locks: the
    second writer cannot even begin, and its "database is locked" is transient too.
    """
    if backend.name == "sqlite":
        holder, other = connect(), connect(timeout=0)
        execute(holder, "BEGIN IMMEDIATE")
        error = raised(lambda: execute(other, "BEGIN IMMEDIATE"))
        assert isinstance(error, sqlite3.OperationalError)
        assert "database is locked" in str(error)
        assert error.sqlite_errorcode == sqlite3.SQLITE_BUSY
        execute(holder, "ROLLBACK")
    else:
        error = cross_lock(connect, (UPDATE_A, UPDATE_B), (UPDATE_B, UPDATE_A))
        if backend.name == "postgres":
            assert error.pgcode == "40P01"  # type: ignore[attr-defined]
        else:
            assert error.args[0] == 1213
    assert pk.classify_error(error) == "transient"


def test_optimistic_check_error_is_transient(account: Any) -> None:
    """Two sessions update one row: Pony's OptimisticCheckError at the loser's flush is transient."""

    def other_session() -> None:
        with db_session:
            account.get(name="a").balance += 1

    def lose() -> None:
        with db_session:
            a = account.get(name="a")
            seen = a.balance
            run_in_thread(other_session)
            a.balance = seen + 10
            flush()

    error = raised(lose)
    assert isinstance(error, OptimisticCheckError)
    assert pk.classify_error(error) == "transient"


@pytest.mark.backends("sqlite", "postgres")
def test_unrepeatable_read_error_is_transient(account: Any) -> None:
    """A row read twice with another session's commit in between: UnrepeatableReadError is transient.

    Not on MariaDB: its REPEATABLE READ snapshot shows the session the first value again, so Pony sees
    nothing change.
    """

    def other_session() -> None:
        with db_session:
            account.get(name="a").balance += 1

    def reread() -> None:
        with db_session:
            a = account.get(name="a")
            assert a.balance == 0
            run_in_thread(other_session)
            account.select()[:]

    error = raised(reread)
    assert isinstance(error, UnrepeatableReadError)
    assert pk.classify_error(error) == "transient"


def test_unique_violation_is_fatal(
    backend: Any, db: Database, account: Any, connect: Callable[..., Any]
) -> None:
    """A duplicate key is fatal as the driver raises it, from db.execute and from an ORM flush."""
    insert = "INSERT INTO account (name, balance) VALUES ('a', 1)"
    conn = connect()
    raw = raised(lambda: execute(conn, insert))
    code = {"postgres": getattr(raw, "pgcode", None), "mysql": raw.args[0]}.get(backend.name)
    assert code == {"postgres": "23505", "mysql": 1062}.get(backend.name)
    if backend.name == "sqlite":
        assert raw.sqlite_errorcode == sqlite3.SQLITE_CONSTRAINT_UNIQUE  # type: ignore[attr-defined]
    assert pk.classify_error(raw) == "fatal"
    conn.rollback()

    wrapped = pony_execute(db, insert)
    assert isinstance(wrapped, pony_dbapi.IntegrityError)
    assert_agree(wrapped, "fatal")

    def orm_insert() -> None:
        with db_session:
            account(name="a", balance=1)

    orm = raised(orm_insert)
    assert isinstance(orm, TransactionIntegrityError)
    assert pk.classify_error(orm) == "fatal"


def run_in_thread(fn: Callable[[], Any]) -> None:
    """Run ``fn`` in another thread (another Pony session) and wait for it; re-raise what it raised."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join(JOIN_TIMEOUT)
    assert not t.is_alive()
    if errors:
        raise errors[0]


# ---------------------------------------------------------------------------------------------------------
# PostgreSQL


def pg_raise(code: str, *, pony: bool = False) -> str:
    # Pony's db.execute reads `$name` as a parameter and `$$` as one `$`.
    dollars = "$$$$" if pony else "$$"
    return f"DO {dollars} BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{code}'; END {dollars}"


PG_CODES = [
    ("40001", "transient"),  # serialization_failure
    ("40P01", "transient"),  # deadlock_detected
    ("23505", "fatal"),  # unique_violation
    ("23503", "fatal"),  # foreign_key_violation
    ("22012", "fatal"),  # division_by_zero
    ("42501", "fatal"),  # insufficient_privilege
    ("P0001", "fatal"),  # raise_exception: an application's own RAISE
]


@pytest.mark.backends("postgres")
@pytest.mark.parametrize(("code", "expected"), PG_CODES)
def test_postgres_sqlstate(
    db: Database, account: Any, connect: Callable[..., Any], code: str, expected: str
) -> None:
    """The SQLSTATE decides, read from psycopg2's ``pgcode``, raw or wrapped by Pony."""
    conn = connect()
    raw = raised(lambda: execute(conn, pg_raise(code)))
    conn.rollback()
    assert raw.pgcode == code  # type: ignore[attr-defined]
    assert pk.classify_error(raw) == expected
    wrapped = pony_execute(db, pg_raise(code, pony=True))
    assert wrapped.original_exc.pgcode == code  # type: ignore[attr-defined]
    assert_agree(wrapped, expected)


@pytest.mark.backends("postgres")
def test_postgres_serialization_failure_of_write_skew(account: Any, connect: Callable[..., Any]) -> None:
    """A real 40001: two serializable transactions each read one row and write the other (write skew)."""
    first, second = connect(), connect()
    for conn in (first, second):
        execute(conn, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
    execute(first, "SELECT balance FROM account WHERE name = 'a'")
    execute(second, "SELECT balance FROM account WHERE name = 'b'")
    execute(first, "UPDATE account SET balance = 1 WHERE name = 'b'")
    execute(second, "UPDATE account SET balance = 1 WHERE name = 'a'")
    first.commit()
    error = raised(lambda: (execute(second, "SELECT 1"), second.commit()))
    second.rollback()
    assert error.pgcode == "40001"  # type: ignore[attr-defined]
    assert pk.classify_error(error) == "transient"


# ---------------------------------------------------------------------------------------------------------
# MariaDB


def mysql_signal(errno: int, sqlstate: str = "40001") -> str:
    return f"SIGNAL SQLSTATE '{sqlstate}' SET MYSQL_ERRNO = {errno}, MESSAGE_TEXT = 'signalled'"


MYSQL_ERRNOS = [
    (1213, "40001", "transient"),  # ER_LOCK_DEADLOCK
    (1205, "HY000", "transient"),  # ER_LOCK_WAIT_TIMEOUT
    (1062, "23000", "fatal"),  # ER_DUP_ENTRY
    (1452, "23000", "fatal"),  # ER_NO_REFERENCED_ROW_2
    (1644, "45000", "fatal"),  # ER_SIGNAL_EXCEPTION: an application's own SIGNAL
]


@pytest.mark.backends("mysql")
@pytest.mark.parametrize(("errno", "sqlstate", "expected"), MYSQL_ERRNOS)
def test_mysql_errno(
    db: Database, account: Any, connect: Callable[..., Any], errno: int, sqlstate: str, expected: str
) -> None:
    """The error number decides, read from PyMySQL's ``args[0]``, raw or wrapped by Pony."""
    conn = connect()
    raw = raised(lambda: execute(conn, mysql_signal(errno, sqlstate)))
    conn.rollback()
    assert raw.args[0] == errno
    assert pk.classify_error(raw) == expected
    wrapped = pony_execute(db, mysql_signal(errno, sqlstate))
    assert wrapped.original_exc.args[0] == errno  # type: ignore[attr-defined]
    assert_agree(wrapped, expected)


@pytest.mark.backends("mysql")
def test_mysql_real_lock_wait_timeout(db: Database, account: Any, connect: Callable[..., Any]) -> None:
    """A real 1205: a session waits one second for a row another connection holds, through Pony."""
    holder = connect()
    execute(holder, UPDATE_A)

    def wait_for_row() -> None:
        with db_session:
            db.execute("SET SESSION innodb_lock_wait_timeout = 1")
            try:
                db.execute(UPDATE_A)
            finally:
                db.execute("SET SESSION innodb_lock_wait_timeout = DEFAULT")

    try:
        wrapped = raised(wait_for_row)
    finally:
        holder.rollback()
    assert wrapped.original_exc.args[0] == 1205  # type: ignore[attr-defined]
    assert_agree(wrapped, "transient")


# ---------------------------------------------------------------------------------------------------------
# SQLite


@pytest.mark.backends("sqlite")
def test_sqlite_busy_through_pony(backend: Any, account: Any, connect: Callable[..., Any]) -> None:
    """Pony's write meets another connection's write lock with timeout=0: the wrapped error is transient."""
    other = Database()
    pk.bind_url(other, backend.url + "&timeout=0")
    other.generate_mapping(create_tables=False)
    holder = connect()
    execute(holder, "BEGIN IMMEDIATE")
    try:
        wrapped = pony_execute(other, UPDATE_A)
    finally:
        execute(holder, "ROLLBACK")
        other.disconnect()
    assert isinstance(wrapped, pony_dbapi.OperationalError)
    assert "database is locked" in str(wrapped)
    assert_agree(wrapped, "transient")


# ---------------------------------------------------------------------------------------------------------
# No database: application errors and ponykit's own


_NOT_DATABASE_ERRORS = st.sampled_from(
    [ValueError, KeyError, RuntimeError, TypeError, ZeroDivisionError, LookupError, OSError, TimeoutError]
)
# Arguments that look like database codes or messages must not fool the classifier.
_LOOKALIKE_ARGS = st.lists(
    st.one_of(
        st.sampled_from([1213, 1205, 2006, 5, "40001", "40P01", "database is locked", "deadlock detected"]),
        st.text(max_size=20),
        st.integers(),
    ),
    max_size=3,
)


@given(cls=_NOT_DATABASE_ERRORS, args=_LOOKALIKE_ARGS)
def test_application_errors_are_fatal(cls: type[Exception], args: list[Any]) -> None:
    """A plain Python exception is fatal, even when its arguments look like a deadlock's."""
    assert pk.classify_error(cls(*args)) == "fatal"


def test_interrupts_are_fatal() -> None:
    """KeyboardInterrupt and SystemExit are never retried."""
    assert pk.classify_error(KeyboardInterrupt()) == "fatal"
    assert pk.classify_error(SystemExit(1)) == "fatal"


def test_ponykit_and_pony_transaction_errors() -> None:
    """ponykit's own errors and Pony's partial commit keep their meaning."""
    assert pk.classify_error(AmbiguousCommitError("x", attempt=1)) == "ambiguous"
    assert pk.classify_error(ConnectionLostError("x", statements=1)) == "transient"
    assert pk.classify_error(RetriesExhausted("x", errors=[ValueError()])) == "fatal"
    assert pk.classify_error(PartialCommitException("x", [])) == "fatal"
