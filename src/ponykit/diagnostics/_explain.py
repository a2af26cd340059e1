"""``explain(query)``: the execution plan of a Pony query on PostgreSQL, MariaDB and SQLite, normalized,
with warnings that name the index to add in Pony terms.

::

    with db_session:
        plan = explain(select(o for o in Order if o.customer == c).order_by(Order.placed))
        print(plan.render())
        for warning in plan.warnings:
            print(warning.suggestion)        # composite_index(Order.customer, Order.placed) in Order

The EXPLAIN runs on the session's own connection (same transaction, same search_path), straight on a
DB-API cursor and never through Pony's provider: ``count_queries()``, the N+1 detector, the SQL log and
Pony's statistics never see it. Per backend:

- PostgreSQL: ``EXPLAIN (FORMAT JSON)``; ``analyze=True``: ``EXPLAIN (FORMAT JSON, ANALYZE, BUFFERS)``.
  Inside a transaction the EXPLAIN runs under a savepoint, so a failing EXPLAIN cannot abort the
  caller's transaction; in an already aborted transaction it refuses.
- MariaDB: ``EXPLAIN FORMAT=JSON``; ``analyze=True``: MariaDB's ``ANALYZE FORMAT=JSON`` statement.
- SQLite: ``EXPLAIN QUERY PLAN``; ``analyze=True`` runs the query, fetches and drops its rows and
  reports the time and row count on the plan (``total_ms``, ``rows``): SQLite measures nothing per step.

``analyze=True`` executes the statement, so it accepts only a plain read: a SELECT (or a WITH whose
body only reads) that takes no row locks; anything else raises :class:`~ponykit.errors.OptionError`
before a statement is sent. Literal values in the plan's conditions are replaced by ``?``
(:attr:`Plan.raw`), so a plan never carries a parameter value.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

from pony.orm import Database

from .. import _pony
from ..errors import ConfigurationError, OptionError, UnsupportedDatabase
from . import _sqltext
from ._plan_parsers import build_plan
from ._plans import DEFAULT_THRESHOLD, Plan, PlanNode, PlanWarning, redact_raw
from ._sqllog import database_facts

__all__ = ["DEFAULT_THRESHOLD", "Plan", "PlanNode", "PlanWarning", "backend_name", "explain", "explain_sql"]

_SAVEPOINT = "ponykit_explain"


def explain(query: Any, analyze: bool = False, *, threshold: int = DEFAULT_THRESHOLD) -> Plan:
    """The execution plan of a Pony query (``select(...)``, ``Entity.select(...)``, with ``filter``,
    ``order_by``, ``limit``/``page``), as the backend would run it now.

    Needs a ``db_session``. ``analyze=True`` runs the query to measure it (see the module docs; refused
    for ``for_update()`` queries, which would take row locks). Warnings are given for full scans, sorts
    and temporary tables over tables of at least ``threshold`` rows.
    """
    source = _pony.query_source(query)
    if source is None:
        raise OptionError(
            f"explain() takes a Pony query (select(...), Entity.select(...), optionally with .filter(), "
            f".order_by(), .limit(n) or .page(p)), got {type(query).__name__}; a query sliced with [:n] "
            "or fetched has already run: use .limit(n) instead"
        )
    pony_query, limit, offset = source
    db = _pony.query_database(pony_query)
    _require_session("explain()")
    built = _pony.query_sql(pony_query, limit, offset)
    return explain_sql(db, built.sql, built.arguments, analyze=analyze, threshold=threshold)


def explain_sql(
    db: Database,
    sql: str,
    arguments: Any = None,
    *,
    analyze: bool = False,
    cursor: Any = None,
    threshold: int = DEFAULT_THRESHOLD,
) -> Plan:
    """The execution plan of ``sql`` with ``arguments`` (in the driver's paramstyle, as Pony passes them).

    Runs on the current db_session's connection, or, with ``cursor`` (a DB-API cursor of ``db``'s
    driver, as a statement listener gets it), on that cursor's connection with a new cursor. Without
    ``analyze`` any single SELECT, WITH, INSERT, UPDATE, DELETE or REPLACE is accepted (EXPLAIN alone
    never runs it); with ``analyze`` only a read without row locks. An EXPLAIN, several statements in
    one string, or any other statement raises :class:`~ponykit.errors.OptionError`.
    """
    statement = _sqltext.classify(sql)
    _check(statement, analyze, arguments)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise OptionError(f"explain(threshold=...) takes a number of rows >= 1, got {threshold!r}")
    backend = backend_name(db)
    if cursor is None:
        _require_session("explain_sql()")
        connection = _pony.session_connection(db)
    else:
        connection = cursor.connection
    if analyze and backend == "mysql":
        raise UnsupportedDatabase(
            "explain(analyze=True) uses MariaDB's ANALYZE FORMAT=JSON statement, which MySQL lacks; "
            "use analyze=False on MySQL"
        )
    with _guard(connection, backend):
        return _run(db, connection, backend, sql, arguments, analyze, threshold)


_EXPLAINED = frozenset({"postgresql", "mariadb", "mysql", "sqlite"})


def backend_name(db: Database) -> str:
    """``postgresql``, ``mariadb``, ``mysql`` or ``sqlite``: the SQL log's ``db.system.name`` of ``db``,
    for a database whose plans ponykit reads (others raise :class:`UnsupportedDatabase`)."""
    system = database_facts(db).system
    if system not in _EXPLAINED:
        raise UnsupportedDatabase(
            f"explain() supports PostgreSQL, MariaDB/MySQL and SQLite; {system} is not supported"
        )
    return system


def _require_session(function: str) -> None:
    if not _pony.in_db_session():
        raise ConfigurationError(
            f"{function} runs EXPLAIN on the session's connection and needs a db_session: call it inside "
            "`with db_session:` (or a function decorated with @db_session)"
        )


def _check(statement: _sqltext.Statement, analyze: bool, arguments: Any) -> None:
    if statement.multiple:
        raise OptionError(
            "explain() takes one statement; this SQL holds several (separated by ';'), and an EXPLAIN "
            "prefixed to it would run the others"
        )
    if type(arguments) is list:
        raise OptionError("explain() takes the arguments of one statement (a tuple or dict), not a list")
    if statement.kind == "explain":
        raise OptionError(
            "explain() was given an EXPLAIN (or ANALYZE/DESCRIBE) statement; pass the statement"
        )
    if statement.kind == "other":
        raise OptionError(
            "explain() takes a SELECT, WITH, INSERT, UPDATE, DELETE or REPLACE statement; this is neither"
        )
    if analyze and (statement.kind != "select" or statement.locking):
        raise OptionError(
            "explain(analyze=True) executes the statement, so it takes only a read without row locks (a "
            "SELECT or a WITH ... SELECT, no FOR UPDATE/FOR SHARE); this statement writes or locks: use "
            "analyze=False, which never runs it"
        )


@contextlib.contextmanager
def _guard(connection: Any, backend: str) -> Iterator[None]:
    """On PostgreSQL, run inside a savepoint in a transaction, so that a failure leaves it usable."""
    if backend != "postgresql":
        yield
        return
    import psycopg2.extensions as ext

    status = connection.get_transaction_status()
    if status == ext.TRANSACTION_STATUS_INERROR:
        raise ConfigurationError(
            "explain() cannot run in an aborted PostgreSQL transaction (a statement failed): roll back first"
        )
    if status == ext.TRANSACTION_STATUS_IDLE:
        try:
            yield
        finally:
            if not connection.autocommit and connection.status == ext.STATUS_IN_TRANSACTION:
                connection.rollback()  # only our read statements began this transaction
        return
    with connection.cursor() as cursor:
        cursor.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            yield
        finally:
            if connection.get_transaction_status() == ext.TRANSACTION_STATUS_INERROR:
                cursor.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")  # a failed EXPLAIN aborts nothing
            cursor.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")


def _execute(connection: Any, sql: str, arguments: Any) -> list[Any]:
    cursor = connection.cursor()
    try:
        if arguments is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, arguments)
        return list(cursor.fetchall())
    finally:
        cursor.close()


_PREFIX = {
    ("postgresql", False): "EXPLAIN (FORMAT JSON) ",
    ("postgresql", True): "EXPLAIN (FORMAT JSON, ANALYZE, BUFFERS) ",
    ("mariadb", False): "EXPLAIN FORMAT=JSON ",
    ("mariadb", True): "ANALYZE FORMAT=JSON ",
    ("mysql", False): "EXPLAIN FORMAT=JSON ",
    ("sqlite", False): "EXPLAIN QUERY PLAN ",
    ("sqlite", True): "EXPLAIN QUERY PLAN ",
}


def _run(
    db: Database, connection: Any, backend: str, sql: str, arguments: Any, analyze: bool, threshold: int
) -> Plan:
    text = sql.strip().rstrip(";").rstrip()
    rows = _execute(connection, _PREFIX[backend, analyze] + text, arguments)
    total_ms: float | None = None
    count: int | None = None
    raw: Any
    if backend == "sqlite":
        raw = [[int(r[0]), int(r[1]), str(r[-1])] for r in rows]
        if analyze:
            start = time.perf_counter()
            count = len(_execute(connection, text, arguments))  # rows dropped unread: values stay here
            total_ms = (time.perf_counter() - start) * 1000.0
    else:
        raw = _json(rows[0][0], backend)
    tables = _pony.table_infos(db)
    return build_plan(
        backend,
        sql,
        redact_raw(raw, backslash_escapes=backend != "postgresql"),
        _sqltext.facts(sql),
        tables,
        lambda table: _table_rows(connection, backend, table, threshold),
        analyzed=analyze,
        threshold=threshold,
        total_ms=total_ms,
        rows=count,
    )


def _json(value: Any, backend: str) -> Any:
    """The parsed JSON plan. MariaDB writes string constants of conditions into its JSON unescaped for
    JSON (``'it\\'s'``, ``'q"z'``, raw tabs), which is not valid JSON: those strings are replaced by
    ``?`` in the text first (they are hidden anyway). Output that still does not parse is kept as its
    text, with literals hidden, and gives a plan without nodes."""
    if not isinstance(value, (str, bytes)):
        return value  # a driver that parses JSON itself
    text = value.decode() if isinstance(value, bytes) else value
    if backend != "postgresql":
        text = _sqltext.redact_strings(text, backslash_escapes=True)
    try:
        return json.loads(text, strict=False)
    except ValueError:
        return _sqltext.redact_literals(text, backslash_escapes=backend != "postgresql")


def _quoted(backend: str, name: str) -> str:
    if backend in ("mariadb", "mysql"):
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def _table_rows(connection: Any, backend: str, table: str, threshold: int) -> int | None:
    """How many rows ``table`` holds: the statistics' estimate when large, else a count capped at
    ``threshold`` (it never reads more rows than that). None if the table cannot be read."""
    marker = "%s" if backend != "sqlite" else "?"
    name = table
    try:
        if backend == "postgresql":
            # Plans name tables without schema, as the search_path resolves them; statistics say -1 (never
            # analyzed) or a stale count for a new table: then count, capped.
            found = _execute(
                connection,
                "SELECT c.reltuples, c.relname FROM pg_class c WHERE lower(c.relname) = %s "
                "AND c.relkind IN ('r', 'p', 'm') AND pg_table_is_visible(c.oid)",
                (table.lower(),),
            )
            if not found:
                return None
            if found[0][0] is not None and found[0][0] >= threshold:
                return int(found[0][0])
            name = str(found[0][1])
        elif backend == "sqlite":
            with contextlib.suppress(Exception):  # no sqlite_stat1 until ANALYZE ran once
                sql = "SELECT stat FROM sqlite_stat1 WHERE lower(tbl) = ? AND idx IS NULL"
                stat = _execute(connection, sql, (table.lower(),))
                if stat and str(stat[0][0]).split()[0].isdigit():
                    return int(str(stat[0][0]).split()[0])
        capped = _execute(
            connection,
            f"SELECT count(*) FROM (SELECT 1 FROM {_quoted(backend, name)} LIMIT {marker}) ponykit_rows",
            (threshold,),
        )
        return int(capped[0][0])
    except Exception:  # noqa: BLE001 - a CTE, a view gone, no privilege: no count, no warning
        return None
