"""Tests for the bounded pool: ``bind_url(db, url, pool=PoolConfig(...))`` (ponykit.binding._pool).

Every test runs on SQLite, PostgreSQL and MariaDB against real servers: the server's own view of the
connections (``pg_stat_activity``, MariaDB's process list) is what the bound is checked against. On
SQLite, where there is no server, the bound is on the sqlite3 connections the process has open (file
handles), read from the pool's own counters.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import Database, Required, db_session, select

import ponykit
from ponykit import _pony
from ponykit.binding import BoundedPool, PoolConfig, bind_url
from ponykit.errors import ConfigurationError, OptionError, PoolTimeout

LONG = 60.0  # a timeout no healthy test run reaches: waiting is allowed, failing is not


def _with_query(url: str, extra: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


class Pooled:
    """A Database bound with a bounded pool on the test's backend, and the server's view of it."""

    def __init__(self, backend: Any, config: PoolConfig, *, password: str | None = None) -> None:
        self.backend = backend
        self.tag = "pk_pool_" + uuid.uuid4().hex[:10]
        url = backend.url
        if backend.name == "postgres":
            # application_name tells this Database's server connections apart in pg_stat_activity.
            url = _with_query(url, f"application_name={self.tag}")
            if password is not None:  # trust authentication: the password is sent, never checked
                parts = urlsplit(url)
                url = urlunsplit(parts._replace(netloc=parts.netloc.replace("@", f":{password}@", 1)))
        self.url = url
        self.db = Database()
        bind_url(self.db, url, pool=config)

        class Item(self.db.Entity):  # type: ignore[name-defined]
            n = Required(int)

        self.Item = Item
        self.db.generate_mapping(create_tables=True)
        with db_session:
            for n in range(3):
                Item(n=n)

    @property
    def pool(self) -> BoundedPool:
        pool = self.db.provider.pool
        assert isinstance(pool, BoundedPool)
        return pool

    def server_connections(self) -> int:
        """How many connections the server has for this Database (SQLite: the pool's open ones)."""
        name = self.backend.name
        if name == "sqlite":
            return self.pool.stats().open
        admin = _admin_connection(name)
        try:
            cursor = admin.cursor()
            if name == "postgres":
                sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                cursor.execute(sql, (self.tag,))
            else:
                database = urlsplit(self.backend.url).path.lstrip("/")
                sql = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s"
                cursor.execute(sql, (database,))
            return int(cursor.fetchone()[0])
        finally:
            admin.close()

    def server_id(self) -> Any:
        """The server's id of the current session's connection (SQLite: the connection object's id)."""
        name = self.backend.name
        if name == "sqlite":
            return id(self.db.get_connection())
        sql = "SELECT pg_backend_pid()" if name == "postgres" else "SELECT CONNECTION_ID()"
        return self.db.select(sql)[0]

    def kill(self, server_id: Any, con: Any) -> None:
        """End a connection as an outage would: the server kills it (SQLite: the connection is closed)."""
        name = self.backend.name
        if name == "sqlite":
            con.close()
            return
        admin = _admin_connection(name)
        try:
            cursor = admin.cursor()
            if name == "postgres":
                cursor.execute("SELECT pg_terminate_backend(%s, 10000)", (server_id,))
            else:
                cursor.execute(f"KILL {int(server_id)}")
        finally:
            admin.close()

    def close(self) -> None:
        self.db.disconnect()
        self.pool.close()


def _admin_connection(name: str) -> Any:
    var = "PONYKIT_TEST_POSTGRES" if name == "postgres" else "PONYKIT_TEST_MYSQL"
    kwargs = ponykit.parse_url(os.environ[var])[1]
    if name == "postgres":
        import psycopg2

        con = psycopg2.connect(**kwargs)
        con.autocommit = True
        return con
    import pymysql

    kwargs = {k: v for k, v in kwargs.items() if k not in ("db", "database")}
    return pymysql.connect(autocommit=True, **kwargs)


def _is_closed(con: Any) -> bool:
    if hasattr(con, "closed"):  # psycopg2
        return bool(con.closed)
    if hasattr(con, "open"):  # PyMySQL
        return not con.open
    try:  # sqlite3
        con.execute("SELECT 1")
    except Exception:
        return True
    return False


@pytest.fixture
def pooled(backend: Any) -> Iterator[Callable[..., Pooled]]:
    made: list[Pooled] = []

    def make(config: PoolConfig, **kwargs: Any) -> Pooled:
        p = Pooled(backend, config, **kwargs)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


# ---------------------------------------------------------------------------------------------------------
# PoolConfig


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_size": 0}, "max_size"),
        ({"max_size": True}, "max_size"),
        ({"max_size": "8"}, "max_size"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": "5"}, "timeout"),
        ({"max_lifetime": 0}, "max_lifetime"),
        ({"max_lifetime": float("inf")}, "max_lifetime"),
        ({"pre_ping": 1}, "pre_ping"),
    ],
)
def test_pool_config_refuses_bad_values_naming_the_option(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(OptionError, match=rf"PoolConfig\({fragment}=\.\.\.\)") as info:
        PoolConfig(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(info.value)


@given(size=st.integers(-1000, 1000), timeout=st.floats(allow_nan=True, allow_infinity=True))
def test_pool_config_accepts_exactly_the_valid_values(size: int, timeout: float) -> None:
    valid = size >= 1 and timeout >= 0 and timeout != float("inf")
    if valid:
        config = PoolConfig(max_size=size, timeout=timeout)
        assert (config.max_size, config.timeout) == (size, timeout)
    else:
        with pytest.raises(OptionError):
            PoolConfig(max_size=size, timeout=timeout)


def test_bind_url_refuses_a_pool_that_is_not_a_pool_config() -> None:
    db = Database()
    with pytest.raises(OptionError, match="PoolConfig"):
        bind_url(db, "sqlite:///:memory:", pool={"max_size": 8})  # type: ignore[arg-type]


def test_in_memory_sqlite_is_refused_with_the_reason() -> None:
    db = Database()
    with pytest.raises(ConfigurationError, match="in-memory SQLite"):
        bind_url(db, "sqlite://:memory:", pool=PoolConfig())


def test_pony_pool_stays_when_no_pool_is_given(db: Database) -> None:
    assert not isinstance(db.provider.pool, _pony.PoolWrapper)
    assert ponykit.binding.pool_stats(db) is None


def test_pool_stats_reports_the_bounded_pool(pooled: Callable[..., Pooled]) -> None:
    p = pooled(PoolConfig(max_size=3, timeout=5))
    with db_session:
        p.Item.select().count()
        during = ponykit.binding.pool_stats(p.db)
    after = ponykit.binding.pool_stats(p.db)
    assert during is not None and after is not None
    assert (during.max_size, during.in_use) == (3, 1)
    assert after.in_use == 0 and after.open == after.idle >= 1
    assert after == p.pool.stats()


# ---------------------------------------------------------------------------------------------------------
# The bound


def test_64_threads_share_8_connections_without_errors(pooled: Callable[..., Pooled]) -> None:
    p = pooled(PoolConfig(max_size=8, timeout=LONG))
    go = threading.Event()
    errors: list[BaseException] = []
    counts: list[int] = []
    seen_in_use: list[int] = []

    def worker() -> None:
        try:
            for _ in range(2):
                with db_session:
                    counts.append(select(i for i in p.Item).count())
                    seen_in_use.append(p.pool.stats().in_use)
                    go.wait(LONG)  # the first 8 sessions hold their connections until all threads queue
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(64)]
    for t in threads:
        t.start()
    # Saturated: 8 sessions hold a connection, the other 56 threads wait for one.
    while not (p.pool.stats().in_use == 8 and p.pool.stats().waits >= 56):
        threading.Event().wait(0.01)
    saturated = p.server_connections()
    go.set()
    for t in threads:
        t.join()
    assert errors == []
    assert counts == [3] * 128
    assert saturated == 8
    assert max(seen_in_use) <= 8
    stats = p.pool.stats()
    assert stats.open <= 8 and stats.timeouts == 0
    assert p.server_connections() <= 8


def test_a_session_waiting_past_the_timeout_gets_pool_timeout(pooled: Callable[..., Pooled]) -> None:
    secret = "s3cret-" + uuid.uuid4().hex[:6]
    p = pooled(PoolConfig(max_size=1, timeout=0.2), password=secret)
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with db_session:
            select(i for i in p.Item).count()
            holding.set()
            done.wait(LONG)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(LONG)
    try:
        with pytest.raises(PoolTimeout) as info, db_session:
            select(i for i in p.Item).count()
    finally:
        done.set()
        holder.join()
    message = str(info.value)
    assert isinstance(info.value, TimeoutError)
    assert "max_size=1" in message and "1 in use" in message and "timeout of 0.2s" in message
    assert ponykit.binding.redact_url(p.url) in message
    assert secret not in message
    with db_session:  # the connection is free again: the next session gets it
        assert select(i for i in p.Item).count() == 3
    assert p.pool.stats().timeouts == 1


def test_sessions_in_turn_reuse_one_connection(pooled: Callable[..., Pooled]) -> None:
    p = pooled(PoolConfig(max_size=4, timeout=LONG))
    cons = []
    for _ in range(3):
        with db_session:
            cons.append(p.db.get_connection())
    assert cons[0] is cons[1] is cons[2]
    assert p.server_connections() == 1


# ---------------------------------------------------------------------------------------------------------
# Health: pre_ping, max_lifetime


def test_pre_ping_replaces_a_killed_connection(pooled: Callable[..., Pooled]) -> None:
    p = pooled(PoolConfig(max_size=1, timeout=LONG, pre_ping=True))
    with db_session:
        first = p.server_id()
        con = p.db.get_connection()
    p.kill(first, con)
    with db_session:  # no error: the dead connection is never handed out
        assert select(i for i in p.Item).count() == 3
        second = p.server_id()
        assert p.db.get_connection() is not con
    assert second != first
    stats = p.pool.stats()
    assert (stats.replaced, stats.open) == (1, 1)


def test_max_lifetime_recycles_old_connections(pooled: Callable[..., Pooled]) -> None:
    p = pooled(PoolConfig(max_size=2, timeout=LONG, max_lifetime=0.05))
    with db_session:
        old = p.db.get_connection()
    threading.Event().wait(0.1)  # older than max_lifetime now
    with db_session:
        new = p.db.get_connection()
        assert select(i for i in p.Item).count() == 3
    assert new is not old
    assert _is_closed(old)
    assert p.pool.stats().recycled >= 1
    assert p.pool.stats().open <= 2


def test_a_failing_on_connect_callback_does_not_leak_a_pool_slot(backend: Any) -> None:
    """Pony runs on_connect callbacks outside the code that drops a failed connection: the pool runs them
    itself, so a failing one closes the new connection and frees its slot (issue #21 review)."""
    db = Database()
    bind_url(db, backend.url, pool=PoolConfig(max_size=1, timeout=0))

    class Item(db.Entity):
        n = Required(int)

    db.generate_mapping(create_tables=True)
    db.disconnect()  # the next session opens a new connection
    pool = db.provider.pool
    fail = [True]
    prepared = []

    @db.on_connect()
    def flaky(db: Database, con: Any) -> None:
        if fail[0]:
            fail[0] = False
            raise RuntimeError("transient failure while setting up the connection")
        prepared.append(con)

    try:
        with pytest.raises(RuntimeError, match="transient"), db_session:
            Item.select().count()
        assert pool.stats().in_use == 0, pool.stats()
        with db_session:  # the slot is free again: no PoolTimeout
            assert Item.select().count() == 0
            assert prepared == [db.get_connection()]  # the callbacks ran once on the new connection
        assert pool.stats().in_use == 0, pool.stats()
    finally:
        db.disconnect()


# ---------------------------------------------------------------------------------------------------------
# Pony's release semantics, fork safety, the test pool


@pytest.mark.backends("postgres")
def test_session_settings_do_not_reach_the_next_session(pooled: Callable[..., Pooled]) -> None:
    p = pooled(PoolConfig(max_size=1, timeout=LONG))
    with db_session:
        p.db.select("SELECT set_config('app.tenant', '42', false)")  # session-level, as RLS helpers set
        con = p.db.get_connection()
    with db_session:
        assert p.db.get_connection() is con  # the same connection ...
        assert p.db.select("SELECT current_setting('app.tenant', true)")[0] in (None, "")  # ... reset


def test_uncommitted_work_is_rolled_back_on_release(pooled: Callable[..., Pooled]) -> None:
    p = pooled(PoolConfig(max_size=1, timeout=LONG))
    with db_session:
        p.Item(n=99)
        p.db.flush()
        p.db.rollback()
    with db_session:
        assert select(i for i in p.Item if i.n == 99).count() == 0


def test_a_forked_child_never_uses_the_parents_connection(pooled: Callable[..., Pooled]) -> None:
    p = pooled(PoolConfig(max_size=2, timeout=LONG))
    with db_session:
        parent_id = p.server_id()
        parent_con = p.db.get_connection()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one session, report what it used, leave without any cleanup
        code = 1
        try:
            with db_session:
                child_id = p.server_id()
                fresh = p.db.get_connection() is not parent_con
                ok = select(i for i in p.Item).count() == 3
            os.write(write, f"{child_id}|{fresh}|{ok}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0, report
    child_id, fresh, ok = report.split("|")
    assert fresh == "True" and ok == "True"
    if p.backend.name != "sqlite":
        assert child_id != str(parent_id)
    # The parent's connection was neither used nor closed by the child: still served, alive, not replaced.
    with db_session:
        assert p.db.get_connection() is parent_con
        assert select(i for i in p.Item).count() == 3
    assert p.pool.stats().replaced == 0


def test_the_test_pool_composes_over_a_bounded_pool(pooled: Callable[..., Pooled]) -> None:
    p = pooled(PoolConfig(max_size=2, timeout=LONG))
    bounded = p.pool
    outer = _pony.install_outer_pool(p.db)
    try:
        with db_session:  # the outer transaction's one connection, made as the provider makes them
            p.Item(n=7)
        with db_session:
            assert select(i for i in p.Item).count() == 4
        outer.end_test()
        outer.active = False
        with db_session:  # inactive: the bounded pool serves again, and the test's rows are gone
            assert select(i for i in p.Item).count() == 3
        assert bounded.stats().open <= 2
        with pytest.raises(ConfigurationError, match="already has a replaced connection pool"):
            _pony.install_pool(p.db, BoundedPool(PoolConfig(), connect=object, reset=id, ping=bool, name="x"))
    finally:
        outer.close()
        p.db.provider.pool = bounded


# ---------------------------------------------------------------------------------------------------------
# Oracle: random checkouts, returns, failures and dead connections against a model of the pool


def test_random_operations_keep_the_pool_within_its_bound(backend: Any) -> None:
    """Hypothesis drives one pool through checkouts, releases, drops and connections dying while idle;
    after every step the pool agrees with a plain model (what is held, what may be open) and never hands
    out a dead or already-held connection."""
    db = Database()
    bind_url(db, backend.url, pool=PoolConfig(max_size=3, timeout=0))
    pool = db.provider.pool
    assert isinstance(pool, BoundedPool)
    operations = st.lists(
        st.tuples(st.sampled_from(["take", "release", "drop", "die"]), st.integers(0, 10)), max_size=25
    )

    @given(ops=operations)
    def run(ops: list[tuple[str, int]]) -> None:
        held: list[Any] = []
        try:
            for op, pick in ops:
                if op == "take":
                    if len(held) == 3:
                        with pytest.raises(PoolTimeout):
                            pool.connect()
                        continue
                    con, _new = pool.connect()
                    assert all(con is not h for h in held)
                    assert not _is_closed(con) and _pony.ping_connection(db, con)
                    held.append(con)
                elif op in ("release", "drop") and held:
                    con = held.pop(pick % len(held))
                    (pool.release if op == "release" else pool.drop)(con)
                elif op == "die" and pool._idle:
                    # Dies while kept (closed under the pool): it must never be handed out.
                    _pony.close_connection(pool._idle[pick % len(pool._idle)].con)
                stats = pool.stats()
                assert stats.in_use == len(held)
                assert stats.open <= 3
                assert stats.open == stats.in_use + stats.idle
        finally:
            for con in held:
                pool.release(con)
            pool.disconnect()  # every example starts from an empty pool

    try:
        run()
    finally:
        db.disconnect()
