"""Capture the golden plans of ``test_plan_parsing.py`` from live servers (run by hand, not by pytest).

    . /work/env.sh && PYTHONPATH=src python tests/diagnostics/plans/capture_plans.py [sqlite|postgres|mysql]

For each backend it fills a fresh schema with 100 customers and 100,000 orders, runs EXPLAIN (and the
ANALYZE variant) of a fixed set of Pony queries straight on the session's connection, and writes
``<system>-<server version>.json``: the server version, each statement's SQL, the backend's raw output
(as the server printed it: values unredacted, they are made-up test data), the row counts the parser
asked for, and the nodes and warnings the parser gave at capture time, which were then read and checked
by hand. Re-capture after a parser change only if the new output is what the parser should give.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any

from pony.orm import Database, Required, Set, count, db_session, desc, select

import ponykit as pk
from ponykit import _pony
from ponykit.diagnostics import _sqltext
from ponykit.diagnostics._explain import _PREFIX, _execute, _table_rows, backend_name
from ponykit.diagnostics._plan_parsers import build_plan
from ponykit.diagnostics._plans import redact_raw

HERE = Path(__file__).parent
ENV = {"postgres": "PONYKIT_TEST_POSTGRES", "mysql": "PONYKIT_TEST_MYSQL"}


def _url(name: str) -> tuple[str, Any]:
    if name == "sqlite":
        path = Path("/tmp") / f"ponykit-plans-{uuid.uuid4().hex[:8]}.db"
        return f"sqlite:///{path}?create_db=1", lambda: path.unlink()
    import psycopg2
    import pymysql

    base = os.environ[ENV[name]]
    unique = "pk_plans_" + uuid.uuid4().hex[:8]
    _provider, kwargs = pk.parse_url(base)
    if name == "postgres":
        admin = psycopg2.connect(**kwargs)
        admin.autocommit = True
        admin.cursor().execute(f'CREATE SCHEMA "{unique}"')
        return f"{base}?options=-c%20search_path%3D{unique}", lambda: admin.cursor().execute(
            f'DROP SCHEMA "{unique}" CASCADE'
        )
    kwargs = {k: v for k, v in kwargs.items() if k not in ("db", "database")}
    admin = pymysql.connect(autocommit=True, **kwargs)
    admin.cursor().execute(f"CREATE DATABASE `{unique}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    return f"{base.rsplit('/', 1)[0]}/{unique}", lambda: admin.cursor().execute(f"DROP DATABASE `{unique}`")


def capture(name: str) -> Path:
    url, drop = _url(name)
    db = Database()

    class Customer(db.Entity):
        name = Required(str)
        orders = Set("Order")

    class Order(db.Entity):
        customer = Required(Customer)
        code = Required(str)
        placed = Required(int)
        total = Required(int)

    pk.bind_url(db, url)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    try:
        with db_session:
            pk.bulk_insert(Customer, ({"name": f"c{i}"} for i in range(100)))
        with db_session:
            rows = (
                {"customer": 1 + i % 100, "code": f"k{i}", "placed": i, "total": i % 1000}
                for i in range(100_000)
            )
            pk.bulk_insert(Order, rows)
        code, total = "k500", 5
        queries = {
            "simple": (select(o for o in Order), False),
            "filtered": (select(o for o in Order if o.code == code), False),
            "ordered": (select(o for o in Order if o.total == total).order_by(Order.placed), False),
            "joined": (select((o, o.customer.name) for o in Order if o.customer.name == "c5"), False),
            "top10": (select(o for o in Order).order_by(desc(Order.placed)).limit(10), False),
            "grouped": (select((o.total, count(o)) for o in Order), False),
            "ordered_analyzed": (select(o for o in Order if o.total == total).order_by(Order.placed), True),
        }
        system = backend_name(db)
        cases: dict[str, Any] = {}
        with db_session:
            _run_cases(db, system, queries, cases, "")
            q = {"sqlite": '"', "postgresql": '"'}.get(system, "`")
            table = f"{q}{Order._table_}{q}"
            db.execute(f"CREATE INDEX idx_order_code ON {table} ({q}code{q})")
            db.execute(f"CREATE INDEX idx_order_total_placed ON {table} ({q}total{q}, {q}placed{q})")
            db.execute(
                {"sqlite": "ANALYZE", "postgresql": f"ANALYZE {table}"}.get(system, f"ANALYZE TABLE {table}")
            )
        with db_session:
            indexed = {k: queries[k] for k in ("filtered", "ordered", "ordered_analyzed")}
            _run_cases(db, system, indexed, cases, "_indexed")
        with db_session:
            version = _server_version(db, system)
        tables = {k: {"entity": v.entity, "columns": v.columns, "indexes": [list(i) for i in v.indexes]}
                  for k, v in _pony.table_infos(db).items()}  # fmt: skip
        path = HERE / f"{system}-{version}.json"
        data = {
            "system": system,
            "server_version": version,
            "threshold": 10_000,
            "tables": tables,
            "cases": cases,
        }
        path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
        return path
    finally:
        db.disconnect()
        drop()


def _server_version(db: Database, system: str) -> str:
    if system == "sqlite":
        return sqlite3.sqlite_version
    if system == "postgresql":
        return str(db.select("SELECT current_setting('server_version')")[0]).split()[0]  # "15.20"
    return str(db.select("SELECT VERSION()")[0]).split("-")[0]  # "10.11.19"


def _run_cases(
    db: Database, system: str, queries: dict[str, Any], cases: dict[str, Any], suffix: str
) -> None:
    for name, (query, analyze) in queries.items():
        if analyze and system == "sqlite":
            continue  # SQLite's analyze is a timed run, not a plan of its own
        built = _pony.query_sql(*_pony.query_source(query))
        connection = _pony.session_connection(db)
        rows = _execute(connection, _PREFIX[system, analyze] + built.sql, built.arguments)
        if system == "sqlite":
            raw: Any = [[int(r[0]), int(r[1]), str(r[-1])] for r in rows]
        else:
            raw = json.loads(rows[0][0]) if isinstance(rows[0][0], (str, bytes)) else rows[0][0]
        asked: dict[str, int | None] = {}

        def table_rows(
            table: str, asked: dict[str, int | None] = asked, connection: Any = connection
        ) -> int | None:
            asked[table] = _table_rows(connection, system, table, 10_000)
            return asked[table]

        plan = build_plan(
            system, built.sql, redact_raw(raw), _sqltext.facts(built.sql), _pony.table_infos(db), table_rows,
            analyzed=analyze,
        )  # fmt: skip
        expected = plan.to_dict()
        cases[name + suffix] = {
            "sql": built.sql,
            "analyzed": analyze,
            "raw": raw,
            "table_rows": asked,
            "expected": {"nodes": expected["nodes"], "warnings": expected["warnings"]},
        }


if __name__ == "__main__":
    for backend in sys.argv[1:] or ["sqlite", "postgres", "mysql"]:
        print(capture(backend))
