"""The slow-query log: records on ``ponykit.sql.slow`` with safe plans, on every backend.

What ran on the server is read from the server's or the driver's own statement record, not from ponykit:

- SQLite: the engine's trace callback skips EXPLAIN statements, so the test connection is made through
  ``sqlite3.connect(factory=...)``, the driver's own extension point: a Connection subclass whose
  cursors record what they execute;
- MariaDB: the server's general query log written to ``mysql.general_log`` (``SET GLOBAL general_log=1,
  log_output='TABLE'``, restored afterwards), read for the test connection's thread id;
- PostgreSQL: ``pg_stat_statements`` is not in ``shared_preload_libraries`` on the test server, and
  ``log_statement`` output cannot be read back from SQL, so the test connection is made through
  psycopg2's own extension point (``connection_factory`` whose cursors record what they execute).
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import psycopg2.extensions
import pymysql
import pytest
from pony.orm import Database, Required, db_session, select

import ponykit as pk
import ponykit.kit
from ponykit.diagnostics import count_queries, detect_n_plus_one, explain_sql, set_slow_query_log
from ponykit.diagnostics._sqltext import classify
from ponykit.errors import ConfigurationError, OptionError

SLOW = "ponykit.sql.slow"


class _Recorder:
    """The statements the server (or driver) saw from the test's Database, oldest first."""

    def __init__(self, backend: Any, db: Database, log: list[str]) -> None:
        self.backend = backend
        self.db = db
        self.log = log
        self._admin: Any = None
        self._thread: int | None = None
        self._saved: tuple[Any, ...] = ()
        self._mark = 0

    def start(self) -> None:
        self._mark = len(self.log)  # what the set-up ran is not the test's
        if self.backend.name == "mysql":
            _provider, kwargs = pk.parse_url(self.backend.url)
            kwargs = {k: v for k, v in kwargs.items() if k not in ("db", "database")}
            self._admin = pymysql.connect(autocommit=True, **kwargs)
            with self._admin.cursor() as cur:
                cur.execute("SELECT @@GLOBAL.general_log, @@GLOBAL.log_output")
                self._saved = cur.fetchone()
                cur.execute("SET GLOBAL log_output = 'TABLE', general_log = 1")
            with db_session:
                self._thread = int(self.db.get_connection().thread_id())  # PyMySQL: the server's id

    def statements(self) -> list[str]:
        if self.backend.name != "mysql":
            return self.log[self._mark :]
        with self._admin.cursor() as cur:
            cur.execute(
                "SELECT CONVERT(argument USING utf8mb4) FROM mysql.general_log "
                "WHERE thread_id = %s AND command_type = 'Query' ORDER BY event_time",
                (self._thread,),
            )
            return [row[0] for row in cur.fetchall()]

    def stop(self) -> None:
        if self._admin is not None:
            with self._admin.cursor() as cur:
                cur.execute("SET GLOBAL general_log = %s, log_output = %s", (self._saved[0], self._saved[1]))
            self._admin.close()

    def explained(self) -> list[str]:
        """Every EXPLAIN/ANALYZE statement that ran, the prefix stripped."""
        found = []
        for sql in self.statements():
            words = sql.split(None, 1)
            head = words[0].upper() if words else ""
            if head in ("EXPLAIN", "ANALYZE"):
                found.append(sql)
        return found


def _recording_pg_connection(log: list[str]) -> type:
    class Cursor(psycopg2.extensions.cursor):  # type: ignore[misc]
        def execute(self, query: Any, vars: Any = None) -> Any:
            log.append(query.decode() if isinstance(query, bytes) else str(query))
            return super().execute(query, vars)

    class Connection(psycopg2.extensions.connection):  # type: ignore[misc]
        def cursor(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("cursor_factory", Cursor)
            return super().cursor(*args, **kwargs)

    return Connection


def _recording_sqlite_connection(log: list[str]) -> type:
    class Cursor(sqlite3.Cursor):
        def execute(self, sql: str, *args: Any) -> Any:
            log.append(sql)
            return super().execute(sql, *args)

        def executemany(self, sql: str, *args: Any) -> Any:
            log.append(sql)
            return super().executemany(sql, *args)

    class Connection(sqlite3.Connection):
        def cursor(self, factory: Any = Cursor) -> Any:  # type: ignore[override]
            return super().cursor(factory)

        def execute(self, sql: str, *args: Any) -> Any:  # type: ignore[override]
            return self.cursor().execute(sql, *args)

    return Connection


@pytest.fixture
def counter(backend: Any, make_db: Callable[[], Database]) -> Iterator[tuple[Database, Any, _Recorder]]:
    log: list[str] = []
    if backend.name == "postgres":
        db = Database()
        pk.bind_url(db, backend.url, connection_factory=_recording_pg_connection(log))
    elif backend.name == "sqlite":
        db = Database()
        pk.bind_url(db, backend.url, factory=_recording_sqlite_connection(log))
    else:
        db = make_db()

    class Counter(db.Entity):
        n = Required(int)
        label = Required(str, default="c")

    pk.attach(db, slow_query_ms=0)
    db.generate_mapping(create_tables=True)
    with db_session:
        Counter(n=0)
    recorder = _Recorder(backend, db, log)
    recorder.start()
    try:
        yield db, Counter, recorder
    finally:
        recorder.stop()
        if backend.name != "mysql":
            db.disconnect()
            ponykit.kit.forget(db)


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == SLOW]


_PREFIX = re.compile(r"^\s*(?:EXPLAIN|ANALYZE)\s*(?:\([^)]*\)|FORMAT\s*=\s*JSON|QUERY\s+PLAN)?\s*", re.I)


def _explained_statement(sql: str) -> str:
    """The statement an EXPLAIN (or MariaDB ANALYZE) statement explains."""
    return _PREFIX.sub("", sql, count=1)


def test_a_slow_update_runs_once_and_only_selects_are_explained(counter: Any, caplog: Any) -> None:
    """The silk #629 scenario: with every statement "slow", an UPDATE n = n + 1 is applied exactly once,
    logged without a plan, and the server ran no EXPLAIN of anything but SELECTs."""
    db, entity, recorder = counter
    caplog.set_level(logging.WARNING, logger=SLOW)
    with db_session:
        db.execute("UPDATE counter SET n = n + 1")
    with db_session:
        assert entity[1].n == 1
        list(select(c for c in entity if c.n >= 0))
    explained = recorder.explained()
    assert explained, "the SELECTs were explained (the recorder sees EXPLAINs)"
    for sql in explained:
        assert classify(_explained_statement(sql)).kind == "select", sql
    assert sum("n = n + 1" in s for s in recorder.statements()) == 1
    update = [r for r in _records(caplog) if "UPDATE" in r.getMessage()]
    assert update and update[0].plan is None
    assert getattr(update[0], "db.operation.name") == "UPDATE"
    selects = [r for r in _records(caplog) if r.plan is not None]
    assert selects, "a slow SELECT gets its plan"
    record = selects[0]
    assert getattr(record, "db.query.text").lstrip().upper().startswith("SELECT")
    assert record.duration_ms >= 0
    assert record.plan["nodes"]
    assert getattr(record, "code.caller").startswith("test_slow_query.py:")  # the line that ran the query
    assert "plan" in record.getMessage()


@pytest.mark.backends("sqlite", "postgres")
def test_a_with_that_writes_is_never_explained(counter: Any, caplog: Any, backend: Any) -> None:
    """A WITH whose body updates is a write: logged, not explained, applied once (MariaDB has no
    writing WITH; the classification itself is checked in test_plan_parsing)."""
    db, entity, recorder = counter
    caplog.set_level(logging.WARNING, logger=SLOW)
    if backend.name == "postgres":
        sql = "WITH u AS (UPDATE counter SET n = n + 1 RETURNING n) SELECT n FROM u"
    else:
        sql = "WITH one AS (SELECT 1 AS x) UPDATE counter SET n = n + (SELECT x FROM one)"
    with db_session:
        db.execute(sql)
    with db_session:
        assert entity[1].n == 1
    assert not [s for s in recorder.explained() if "counter SET" in s]
    records = [r for r in _records(caplog) if "WITH" in r.getMessage()]
    assert records and records[0].plan is None


def test_an_explain_is_never_explained(counter: Any, caplog: Any) -> None:
    db, _entity, recorder = counter
    caplog.set_level(logging.WARNING, logger=SLOW)
    with db_session:
        db.execute("EXPLAIN SELECT * FROM counter")
    explained = recorder.explained()
    assert len(explained) == 1  # the user's own EXPLAIN, and no EXPLAIN EXPLAIN
    assert not any(s.upper().count("EXPLAIN") > 1 for s in recorder.statements())
    records = [r for r in _records(caplog) if "EXPLAIN" in getattr(r, "db.query.text")]
    assert records and records[0].plan is None


def test_a_failed_statement_is_logged_without_a_plan(counter: Any, caplog: Any) -> None:
    db, _entity, recorder = counter
    caplog.set_level(logging.WARNING, logger=SLOW)
    with pytest.raises(Exception), db_session:  # noqa: PT011 - each driver raises its own class
        db.select("SELECT no_such_column FROM counter")
    assert not [s for s in recorder.explained() if "no_such_column" in s]
    records = [r for r in _records(caplog) if "no_such_column" in getattr(r, "db.query.text")]
    assert records and records[0].plan is None
    assert getattr(records[0], "error.type")


@pytest.mark.backends("postgres")
def test_no_explain_in_an_aborted_postgres_transaction(counter: Any, caplog: Any) -> None:
    """After a failure inside a transaction, PostgreSQL refuses every statement: no EXPLAIN is tried,
    and explain_sql() on that connection says why instead of failing obscurely."""
    db, entity, recorder = counter
    caplog.set_level(logging.WARNING, logger=SLOW)
    with db_session:
        entity[1].n = 5
        db.flush()  # the transaction has begun and written
        explained = len(recorder.explained())
        with pytest.raises(Exception):  # noqa: PT011 - psycopg2's ProgrammingError
            db.execute("SELECT no_such_column FROM counter")
        with pytest.raises(Exception):  # noqa: PT011 - InFailedSqlTransaction
            db.execute("SELECT n FROM counter")
        connection = db.get_connection()
        cursor = connection.cursor()
        before = len(recorder.statements())
        with pytest.raises(ConfigurationError, match="aborted"):
            explain_sql(db, "SELECT n FROM counter", None, cursor=cursor)
        assert len(recorder.statements()) == before
        db.rollback()
    assert len(recorder.explained()) == explained


def test_plans_are_rate_limited_per_statement_shape(counter: Any, caplog: Any) -> None:
    db, entity, recorder = counter
    caplog.set_level(logging.WARNING, logger=SLOW)
    with db_session:
        for value in range(3):
            list(select(c for c in entity if c.n == value))
    shape = [r for r in _records(caplog) if "WHERE" in getattr(r, "db.query.text")]
    assert len(shape) == 3  # every slow statement is logged...
    assert sum(r.plan is not None for r in shape) == 1  # ...its plan once
    assert "logged less than 60 s ago" in shape[-1].getMessage()
    assert len([s for s in recorder.explained() if "WHERE" in s]) == 1
    set_slow_query_log(db, 0, plan_interval=0)
    with db_session:
        for value in range(2):
            list(select(c for c in entity if c.n == value))
    assert len([s for s in recorder.explained() if "WHERE" in s]) == 3


def test_the_plans_are_not_counted_as_statements(counter: Any, caplog: Any) -> None:
    """The EXPLAINs run beside Pony's provider: count_queries() and the N+1 detector never see them."""
    db, entity, recorder = counter
    caplog.set_level(logging.WARNING, logger=SLOW)
    set_slow_query_log(db, 0, plan_interval=0)
    with db_session:
        for i in range(5):
            entity(n=10 + i)
    with db_session, count_queries() as counter_, detect_n_plus_one(threshold=6, raise_on_exit=True):
        for value in range(5):
            list(select(c for c in entity if c.n == value))
    assert counter_.count == 5
    assert all(s.sql.lstrip().upper().startswith("SELECT") for s in counter_.statements)
    assert len([s for s in recorder.explained() if "WHERE" in s]) == 5


def test_records_hold_no_parameter_values(counter: Any, caplog: Any) -> None:
    """A bound value appears only in ``db.query.parameters`` (masked there when the column is sensitive;
    ``label`` is not): neither the message, the other extra fields nor the plan carry it."""
    db, entity, _recorder = counter
    caplog.set_level(logging.WARNING, logger=SLOW)
    secret = "SECRET-'\\-9931"
    with db_session:
        list(select(c for c in entity if c.label == secret))
        db.select("SELECT n FROM counter WHERE label = $secret")
    records = [r for r in _records(caplog) if "label" in getattr(r, "db.query.text", "")]
    assert len(records) == 2, [r.getMessage() for r in records]
    assert all(r.plan is not None for r in records), [r.getMessage() for r in records]
    for record in records:
        fields = {k: v for k, v in record.__dict__.items() if k != "db.query.parameters"}
        text = record.getMessage() + json.dumps(fields, default=str, ensure_ascii=False)
        assert "SECRET" not in text and "9931" not in text
        params = getattr(record, "db.query.parameters")
        assert list(params.values() if isinstance(params, dict) else params) == [secret]


def test_threshold_and_switching_off(counter: Any, caplog: Any) -> None:
    db, entity, recorder = counter
    caplog.set_level(logging.WARNING, logger=SLOW)
    set_slow_query_log(db, 10**9)  # nothing takes 11 days
    with db_session:
        list(entity.select())
    assert not _records(caplog)
    set_slow_query_log(db, None)
    with db_session:
        list(entity.select())
    assert not _records(caplog)
    assert not recorder.explained()
    with pytest.raises(OptionError):
        set_slow_query_log(db, -1)
    with pytest.raises(OptionError):
        set_slow_query_log(db, 0, plan_interval=-5)
