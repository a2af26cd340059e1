"""The harness proves itself: the same 100-row range query through each of the five contenders.

Every contender selects ``lo <= qty < hi`` ordered by id from the same seeded ``bench_item`` table and
must return the same 100 rows. Group ``harness-select-<backend>``; contenders ``raw``, ``pony``,
``ponykit``, ``sqlalchemy`` and ``peewee``.
"""

from __future__ import annotations

from typing import Any

import pytest
from pony.orm import db_session, select

pytestmark = pytest.mark.benchmark

SEEDED = 1000
LO, HI = 200, 300  # qty is a permutation of 0..999 over the first 1000 rows: exactly 100 match


@pytest.fixture
def expected(bench_env: Any) -> list[tuple[int, str, int]]:
    """Seed the table and return the ``(id, name, qty)`` rows the query must produce, in id order."""
    bench_env.seed(SEEDED)
    rows = [(i + 1, r["name"], r["qty"]) for i, r in enumerate(bench_env.rows(SEEDED))]
    matching = [row for row in rows if LO <= row[2] < HI]
    assert len(matching) == HI - LO
    return matching


def _setup(benchmark: Any, env: Any, contender: str) -> None:
    benchmark.group = f"harness-select-{env.name}"
    benchmark.extra_info["contender"] = contender
    benchmark.extra_info["backend"] = env.name


def test_harness_select_raw(benchmark: Any, bench_env: Any, expected: list[tuple[int, str, int]]) -> None:
    env = bench_env
    _setup(benchmark, env, "raw")
    p = env.placeholder
    sql = (
        "SELECT id, name, qty, price, created, active, note FROM bench_item "
        f"WHERE qty >= {p} AND qty < {p} ORDER BY id"
    )
    conn = env.raw_connect()

    def run() -> list[tuple[int, str, int]]:
        cur = conn.cursor()
        cur.execute(sql, (LO, HI))
        rows = cur.fetchall()
        cur.close()
        conn.commit()
        return [(r[0], r[1], r[2]) for r in rows]

    try:
        assert benchmark(run) == expected
    finally:
        conn.close()


def _pony_run(item: Any) -> list[tuple[int, str, int]]:
    with db_session:
        query = select(i for i in item if i.qty >= LO and i.qty < HI).order_by(item.id)
        return [(o.id, o.name, o.qty) for o in query]


def test_harness_select_pony(benchmark: Any, bench_env: Any, expected: list[tuple[int, str, int]]) -> None:
    _setup(benchmark, bench_env, "pony")
    assert benchmark(_pony_run, bench_env.PonyItem) == expected


def test_harness_select_ponykit(benchmark: Any, bench_env: Any, expected: list[tuple[int, str, int]]) -> None:
    _setup(benchmark, bench_env, "ponykit")
    assert benchmark(_pony_run, bench_env.KitItem) == expected


def test_harness_select_sqlalchemy(
    benchmark: Any, bench_env: Any, expected: list[tuple[int, str, int]]
) -> None:
    import sqlalchemy as sa

    env = bench_env
    _setup(benchmark, env, "sqlalchemy")
    item = env.SAItem
    stmt = sa.select(item).where(item.qty >= LO, item.qty < HI).order_by(item.id)

    def run() -> list[tuple[int, str, int]]:
        with env.sa_session_factory() as session, session.begin():
            return [(o.id, o.name, o.qty) for o in session.scalars(stmt)]

    assert benchmark(run) == expected


def test_harness_select_peewee(benchmark: Any, bench_env: Any, expected: list[tuple[int, str, int]]) -> None:
    env = bench_env
    _setup(benchmark, env, "peewee")
    item = env.PeeweeItem

    def run() -> list[tuple[int, str, int]]:
        with env.peewee_db.atomic():
            query = item.select().where((item.qty >= LO) & (item.qty < HI)).order_by(item.id)
            return [(o.id, o.name, o.qty) for o in query]

    assert benchmark(run) == expected


def test_harness_contenders_read_identical_values(bench_env: Any) -> None:
    """Not a benchmark: full rows read back through every ORM equal what ``rows()`` produced."""
    import sqlalchemy as sa

    env = bench_env
    env.seed(50)
    want = [
        (i + 1, *(r[c] for c in ("name", "qty", "price", "created", "active", "note")))
        for i, r in enumerate(env.rows(50))
    ]

    def as_tuple(o: Any) -> tuple[Any, ...]:
        return (o.id, o.name, o.qty, o.price, o.created, bool(o.active), o.note)

    for item in (env.PonyItem, env.KitItem):
        with db_session:
            assert [as_tuple(o) for o in item.select().order_by(item.id)] == want, item._database_
    with env.sa_session_factory() as session:
        got = [as_tuple(o) for o in session.scalars(sa.select(env.SAItem).order_by(env.SAItem.id))]
        assert got == want
    item = env.PeeweeItem
    assert [as_tuple(o) for o in item.select().order_by(item.id)] == want
