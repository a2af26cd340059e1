"""Contention figures for docs/performance.md: real deadlocks and serialization failures, retried or lost.

Runs the workloads of ``tests/transactions/test_contention.py`` (the same code the tests assert on) and
prints one Markdown table:

* **crossed pairs** on PostgreSQL and MariaDB: N pairs of threads, each pair updating two rows in opposite
  order (one real deadlock per pair on the first attempt);
* **serializable counter** on PostgreSQL: N threads doing read-modify-write of one row under
  ``isolation="serializable"`` (real 40001s).

Each runs under ``@transaction(retry=50)`` with the default ``Backoff()`` (full jitter), with
``Backoff(jitter=False)``, and under plain Pony ``@db_session(retry=3)``. Columns: logical transactions
committed, how many were applied exactly once (marker rows), retries per committed transaction, the
median and p99 of the waits ponykit logged before retries, and the wall time of the run.

    PONYKIT_TEST_POSTGRES=postgresql://postgres@127.0.0.1:5432/test \\
    PONYKIT_TEST_MYSQL=mysql://root@127.0.0.1:3306/test \\
    PONYKIT_CONTENTION_N=10 python benchmarks/contention_report.py [-o table.md]

N threads hold N (pairs: 2N) connections at once: keep it under the servers' ``max_connections``. The
script creates and drops its own schema / database (``ponykit_contention``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import platform
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pony.orm import Database  # noqa: E402

import ponykit as pk  # noqa: E402 - after the path set-up, so this checkout's ponykit is measured

SCHEMA = "ponykit_contention"


def _workloads() -> ModuleType:
    path = ROOT / "tests" / "transactions" / "test_contention.py"
    spec = importlib.util.spec_from_file_location("contention_workloads", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _server_database(name: str, base: str) -> Iterator[Callable[[], Database]]:
    """Fresh Databases bound to an empty schema (PostgreSQL) or database (MariaDB), dropped at the end."""
    provider, kwargs = pk.parse_url(base)
    made: list[Database] = []
    if provider == "postgres":
        import psycopg2

        admin = psycopg2.connect(**kwargs)
        admin.autocommit = True
        drop, create = f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE', f'CREATE SCHEMA "{SCHEMA}"'
        parts = urlsplit(base)
        extra = f"options=-c%20search_path%3D{SCHEMA}"
        url = urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))
    else:
        import pymysql

        admin = pymysql.connect(
            autocommit=True, **{k: v for k, v in kwargs.items() if k not in ("db", "database")}
        )
        drop = f"DROP DATABASE IF EXISTS `{SCHEMA}`"
        create = f"CREATE DATABASE `{SCHEMA}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        url = urlunsplit(urlsplit(base)._replace(path="/" + SCHEMA))

    def fresh() -> Database:
        for database in made:
            database.disconnect()
            pk.kit.forget(database)
        made.clear()
        with admin.cursor() as cur:
            cur.execute(drop)
            cur.execute(create)
        database = Database()
        pk.bind_url(database, url)
        made.append(database)
        return database

    try:
        yield fresh
    finally:
        for database in made:
            database.disconnect()
            pk.kit.forget(database)
        with admin.cursor() as cur:
            cur.execute(drop)
        admin.close()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _row(server: str, out: Any) -> str:
    once = len(out.applied) == len(set(out.applied)) == len(out.committed) == out.succeeded
    if out.mode.startswith("db_session"):
        waits = "no sleep | no sleep"  # Pony retries at once and logs nothing
    else:
        waits = f"{_percentile(out.waits, 0.5) * 1000:.1f} ms | {_percentile(out.waits, 0.99) * 1000:.1f} ms"
    return (
        f"| {server} | {out.workload} | `{out.mode}` | {out.succeeded}/{out.logical} | "
        f"{'yes' if once else 'NO'} | {out.retries} | {out.retries / max(1, out.succeeded):.2f} | "
        f"{waits} | {out.seconds:.2f} s |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="also write the table to this file")
    args = parser.parse_args(argv)
    w = _workloads()
    n = w.N
    servers = [
        ("PostgreSQL", os.environ.get("PONYKIT_TEST_POSTGRES", "")),
        ("MariaDB", os.environ.get("PONYKIT_TEST_MYSQL", "")),
    ]
    lines = [
        f"N = {n} (crossed pairs: {2 * n} threads, serializable counter: {n} threads); "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs. Waits are the sleeps ponykit logged "
        "before each retry.",
        "",
        "| server | workload | contender | committed | each applied once | retries | retries per success "
        "| p50 wait | p99 wait | wall time |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    capture = contextlib.contextmanager(w.capture_retries)
    for server, base in servers:
        if not base:
            print(f"{server}: no URL in the environment, skipped", file=sys.stderr)
            continue
        with _server_database(server, base) as fresh, capture() as log:
            contenders: list[tuple[str, Callable[[Database], Any]]] = [
                ("transaction(retry=50), Backoff()", lambda db: w.ponykit_retry(db, backoff=pk.Backoff())),
                (
                    "transaction(retry=50), Backoff(jitter=False)",
                    lambda db: w.ponykit_retry(db, backoff=pk.Backoff(jitter=False)),
                ),
                ("db_session(retry=3)", lambda db: w.pony_retry()),
            ]
            for mode, wrap in contenders:
                db = fresh()
                slot, applied = w.make_schema(db)
                out = w.crossed_pairs(db, slot, applied, n, wrap(db), mode, log)
                lines.append(_row(server, out))
                print(lines[-1], file=sys.stderr)
            if server != "PostgreSQL":
                continue
            serializable: list[tuple[str, Callable[[Database], Any]]] = [
                (
                    'transaction(retry=50, isolation="serializable"), Backoff()',
                    lambda db: w.ponykit_retry(db, backoff=pk.Backoff(), isolation="serializable"),
                ),
                (
                    'transaction(retry=50, isolation="serializable"), Backoff(jitter=False)',
                    lambda db: w.ponykit_retry(
                        db, backoff=pk.Backoff(jitter=False), isolation="serializable"
                    ),
                ),
                ("db_session(retry=3, serializable=True)", lambda db: w.pony_retry(serializable=True)),
            ]
            for mode, wrap in serializable:
                db = fresh()
                slot, applied = w.make_schema(db)
                out = w.serializable_counter(db, slot, applied, n, wrap(db), mode, log)
                lines.append(_row(server, out))
                print(lines[-1], file=sys.stderr)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.output:
        Path(args.output).write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
