"""Bulk writes: ponykit.bulk against the raw driver, plain Pony, SQLAlchemy 2 and peewee.

Groups ``bulk-insert-<N>-<backend>`` and ``bulk-update-<N>-<backend>`` (N = 100,000 rows, 1,000 with
``--benchmark-disable``), and ``bulk-memory-<backend>`` (peak memory of a 1,000,000-row generator, reported in
``extra_info``). Every contender writes the same rows of ``make_rows`` into ``bench_item``; each round
starts from an empty (insert) or freshly seeded (update) table, outside the timing.

The raw floor on SQLite is ``executemany``; on PostgreSQL the faster of ``execute_values`` and ``COPY``
(plain ``executemany`` there is one round trip per row), which is ``COPY`` (``raw-copy``): read the
PostgreSQL insert table with ``report.py --baseline raw-copy``. ponykit itself writes with ``COPY`` there.
``bulk-memory-<backend>`` runs on SQLite (INSERT) and PostgreSQL (COPY, whose text for one batch is held too).
"""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pony.orm import commit, db_session, select

import ponykit
from benchmarks.conftest import COLUMNS, make_rows

pytestmark = pytest.mark.benchmark


@pytest.fixture
def n(request: pytest.FixtureRequest) -> int:
    """Rows per run: 100,000 when timing, 1,000 in the CI smoke run."""
    return 1_000 if request.config.getoption("benchmark_disable") else 100_000


def _rounds(request: pytest.FixtureRequest, slow: bool = False) -> int:
    # Five rounds: on a shared machine (and a shared database server) a burst of load hits the rounds
    # of one contender, which run one after the other; the median of five shrugs off one or two.
    return 1 if request.config.getoption("benchmark_disable") or slow else 5


def _run(
    benchmark: Any,
    env: Any,
    group: str,
    contender: str,
    fn: Callable[[], Any],
    setup: Callable[[], Any],
    rounds: int,
) -> None:
    benchmark.group = group
    benchmark.extra_info["contender"] = contender
    benchmark.extra_info["backend"] = env.name
    benchmark.pedantic(fn, setup=setup, rounds=rounds, iterations=1)


def _quiet(_result: Any) -> None:
    """Swallow a setup function's result: pytest-benchmark would take it as the arguments of the run."""


# ---------------------------------------------------------------------------------------------------------
# INSERT


INSERT_CONTENDERS = ["raw", "ponykit", "ponykit-return-ids", "pony", "sqlalchemy", "peewee"]


@pytest.mark.bench_backends("sqlite", "postgres")
@pytest.mark.parametrize("contender", INSERT_CONTENDERS)
def test_bulk_insert(
    benchmark: Any, bench_env: Any, n: int, contender: str, request: pytest.FixtureRequest
) -> None:
    _insert(benchmark, bench_env, n, contender, request)


@pytest.mark.bench_backends("postgres")
def test_bulk_insert_copy(benchmark: Any, bench_env: Any, n: int, request: pytest.FixtureRequest) -> None:
    _insert(benchmark, bench_env, n, "raw-copy", request)


def _insert(benchmark: Any, env: Any, n: int, contender: str, request: pytest.FixtureRequest) -> None:
    rows = env.rows(n)
    group = f"bulk-insert-{n}-{env.name}"
    fn = _insert_fn(env, contender, rows)
    _run(benchmark, env, group, contender, fn, env.truncate, _rounds(request, contender == "pony"))
    assert env.count() == n


def _insert_fn(env: Any, contender: str, rows: list[dict[str, Any]]) -> Callable[[], Any]:
    cols = ", ".join(COLUMNS)
    p = env.placeholder
    if contender == "raw":

        def raw() -> None:
            conn = env.raw_connect()
            cur = conn.cursor()
            values = env.raw_values(rows)
            if env.provider == "postgres":
                from psycopg2.extras import execute_values

                execute_values(cur, f"INSERT INTO bench_item ({cols}) VALUES %s", values, page_size=1000)
            else:
                cur.executemany(
                    f"INSERT INTO bench_item ({cols}) VALUES ({', '.join([p] * len(COLUMNS))})", values
                )
            conn.commit()
            conn.close()

        return raw
    if contender == "raw-copy":

        def copy() -> None:
            conn = env.raw_connect()
            buf = io.StringIO()
            for r in rows:
                note = "\\N" if r["note"] is None else _copy_text(r["note"])
                buf.write(
                    f"{_copy_text(r['name'])}\t{r['qty']}\t{r['price']}\t{r['created'].isoformat()}\t"
                    f"{'t' if r['active'] else 'f'}\t{note}\n"
                )
            buf.seek(0)
            cur = conn.cursor()
            cur.copy_expert(f"COPY bench_item ({cols}) FROM STDIN", buf)
            conn.commit()
            conn.close()

        return copy
    if contender in ("ponykit", "ponykit-return-ids"):
        item = env.KitItem
        return_ids = contender == "ponykit-return-ids"

        def kit() -> None:
            with db_session:
                ponykit.bulk_insert(item, rows, return_ids=return_ids)

        return kit
    if contender == "pony":
        item = env.PonyItem

        def pony() -> None:
            with db_session:
                for r in rows:
                    item(**r)

        return pony
    if contender == "sqlalchemy":

        def sqlalchemy() -> None:
            with env.sa_engine.begin() as conn:
                conn.execute(env.sa_table.insert(), rows)

        return sqlalchemy

    def peewee() -> None:
        from peewee import chunked

        size = 100 if env.provider == "sqlite" else 1000
        with env.peewee_db.atomic():
            for chunk in chunked(rows, size):
                env.PeeweeItem.insert_many(chunk).execute()

    return peewee


def _copy_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


# ---------------------------------------------------------------------------------------------------------
# UPDATE by primary key


def _updates(n: int) -> list[dict[str, Any]]:
    return [
        {"id": i + 1, "name": f"renamed-{i}", "qty": (i * 13) % 1000, "price": r["price"] + 1}
        for i, r in enumerate(make_rows(n))
    ]


@pytest.mark.bench_backends("sqlite", "postgres")
@pytest.mark.parametrize("contender", ["raw", "ponykit", "pony", "sqlalchemy"])
def test_bulk_update(
    benchmark: Any, bench_env: Any, n: int, contender: str, request: pytest.FixtureRequest
) -> None:
    env = bench_env
    updates = _updates(n)
    group = f"bulk-update-{n}-{env.name}"
    fn = _update_fn(env, contender, updates)
    rounds = _rounds(request, contender == "pony")
    _run(benchmark, env, group, contender, fn, lambda: _quiet(env.seed(n)), rounds)
    cur = env.admin().cursor()
    cur.execute("SELECT COUNT(*) FROM bench_item WHERE name LIKE 'renamed-%'")
    assert cur.fetchone()[0] == n


def _update_fn(env: Any, contender: str, updates: list[dict[str, Any]]) -> Callable[[], Any]:
    p = env.placeholder
    if contender == "raw":

        def raw() -> None:
            conn = env.raw_connect()
            cur = conn.cursor()
            if env.provider == "postgres":
                from psycopg2.extras import execute_values

                values = [(u["id"], u["name"], u["qty"], u["price"]) for u in updates]
                execute_values(
                    cur,
                    "UPDATE bench_item SET name = v.name, qty = v.qty, price = v.price FROM (VALUES %s) "
                    "AS v (id, name, qty, price) WHERE bench_item.id = v.id",
                    values,
                    template="(%s, %s, %s::integer, %s::numeric)",
                    page_size=1000,
                )
            else:
                price = (lambda d: str(d)) if env.provider == "sqlite" else (lambda d: d)
                values = [(u["name"], u["qty"], price(u["price"]), u["id"]) for u in updates]
                cur.executemany(
                    f"UPDATE bench_item SET name = {p}, qty = {p}, price = {p} WHERE id = {p}", values
                )
            conn.commit()
            conn.close()

        return raw
    if contender == "ponykit":
        item = env.KitItem

        def kit() -> None:
            with db_session:
                ponykit.bulk_update(item, updates)

        return kit
    if contender == "pony":
        item = env.PonyItem

        def pony() -> None:
            with db_session:
                objs = {o.id: o for o in select(i for i in item)}
                for u in updates:
                    o = objs[u["id"]]
                    o.name, o.qty, o.price = u["name"], u["qty"], u["price"]
                commit()

        return pony

    def sqlalchemy() -> None:
        import sqlalchemy as sa

        with env.sa_session_factory() as session, session.begin():
            session.execute(sa.update(env.SAItem), updates)

    return sqlalchemy


# ---------------------------------------------------------------------------------------------------------
# Memory: a generator of a million rows


@pytest.mark.bench_backends("sqlite", "postgres")
def test_bulk_memory_ponykit(benchmark: Any, bench_env: Any, request: pytest.FixtureRequest) -> None:
    """Peak traced memory of bulk_insert over a 1,000,000-row generator stays bounded by one batch."""
    env = bench_env
    total = 10_000 if request.config.getoption("benchmark_disable") else 1_000_000
    template = env.rows(1)[0]

    def generate() -> Iterator[dict[str, Any]]:
        for i in range(total):
            yield {**template, "qty": i}

    def run() -> None:
        tracemalloc.start()
        try:
            with db_session:
                ponykit.bulk_insert(env.KitItem, generate(), batch_size=10_000)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        benchmark.extra_info["rows"] = total
        benchmark.extra_info["peak_traced_mib"] = round(peak / 2**20, 1)

    benchmark.group = f"bulk-memory-{env.name}"
    benchmark.extra_info["contender"] = "ponykit"
    benchmark.extra_info["backend"] = env.name
    benchmark.pedantic(run, setup=env.truncate, rounds=1, iterations=1)
    assert env.count() == total
