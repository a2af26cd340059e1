"""Cache benchmarks: cached_select hits and misses against plain Pony, @cached hits against cachetools.

Groups (per backend):

* ``cache-values-20-<backend>``: a 20-row ``(name, qty)`` select; ``raw`` driver, plain ``pony`` (a new
  db_session each time), ``ponykit-hit`` (cached_select served from a MemoryCache); the ``-reused-query``
  variants build the Pony query object once and run it in a new db_session each time, which takes
  Pony's query construction (about 25 µs) out of both sides; ``ponykit-cached-query`` is a
  ``@cached_query`` builder, whose statement is built once per distinct arguments (``-no-session``:
  called outside a db_session, which value results allow).
* ``cache-entities-20-<backend>``: 20 ``Item`` entities; ``pony``, ``ponykit-hit`` (rebuilt from cached
  rows, no SQL), ``ponykit-miss`` (a generation bump before each call, so every call runs the query and
  stores it).
* ``cache-function-hit``: a ``@cached`` function returning a small dict against a bare
  ``cachetools.TTLCache`` lookup of a precomputed value.
"""

from __future__ import annotations

from typing import Any

import cachetools
import pytest
from pony.orm import db_session, select

from ponykit.query import cached, cached_query, cached_select
from ponykit.query._generations import db_state
from ponykit.query.backends import MemoryCache

pytestmark = [pytest.mark.benchmark, pytest.mark.bench_backends("sqlite", "sqlite_mem", "postgres")]

SEEDED = 1000
LIMIT = 20  # qty is a permutation of 0..999: exactly 20 rows have qty < 20


@pytest.fixture
def env(bench_env: Any) -> Any:
    """The seeded environment with a fresh MemoryCache on the ponykit Database."""
    bench_env.seed(SEEDED)
    bench_env.kit.cache = MemoryCache(maxsize=1000, ttl=None)
    return bench_env


def _setup(benchmark: Any, group: str, contender: str) -> None:
    benchmark.group = group
    benchmark.extra_info["contender"] = contender


def _values_query(item: Any) -> Any:
    return select((i.name, i.qty) for i in item if i.qty < LIMIT).order_by(1)


def _entities_query(item: Any) -> Any:
    return select(i for i in item if i.qty < LIMIT).order_by(item.id)


# -- plain values ------------------------------------------------------------------------------------------


def test_cache_values_raw(benchmark: Any, env: Any) -> None:
    _setup(benchmark, f"cache-values-20-{env.name}", "raw")
    conn = env.raw_connect()
    sql = f"SELECT name, qty FROM bench_item WHERE qty < {env.placeholder} ORDER BY name"

    def run() -> list[Any]:
        cur = conn.cursor()
        cur.execute(sql, (LIMIT,))
        rows = cur.fetchall()
        cur.close()
        conn.commit()
        return [tuple(r) for r in rows]

    try:
        assert len(benchmark(run)) == LIMIT
    finally:
        conn.close()


def test_cache_values_pony(benchmark: Any, env: Any) -> None:
    _setup(benchmark, f"cache-values-20-{env.name}", "pony")

    def run() -> list[Any]:
        with db_session:
            return list(_values_query(env.PonyItem))

    assert len(benchmark(run)) == LIMIT


def test_cache_values_ponykit_hit(benchmark: Any, env: Any) -> None:
    _setup(benchmark, f"cache-values-20-{env.name}", "ponykit-hit")

    def run() -> list[Any]:
        with db_session:
            return cached_select(_values_query(env.KitItem))

    expected = run()
    assert benchmark(run) == expected


def test_cache_values_pony_reused(benchmark: Any, env: Any) -> None:
    _setup(benchmark, f"cache-values-20-{env.name}", "pony-reused-query")
    with db_session:
        query = _values_query(env.PonyItem)

    def run() -> list[Any]:
        with db_session:
            return list(query)

    assert len(benchmark(run)) == LIMIT


def test_cache_values_ponykit_hit_reused(benchmark: Any, env: Any) -> None:
    _setup(benchmark, f"cache-values-20-{env.name}", "ponykit-hit-reused-query")
    with db_session:
        query = _values_query(env.KitItem)

    def run() -> list[Any]:
        with db_session:
            return cached_select(query)

    expected = run()
    assert benchmark(run) == expected


def test_cache_values_ponykit_cached_query(benchmark: Any, env: Any) -> None:
    _setup(benchmark, f"cache-values-20-{env.name}", "ponykit-cached-query")

    @cached_query
    def below(limit: int) -> Any:
        return select((i.name, i.qty) for i in env.KitItem if i.qty < limit).order_by(1)

    def run() -> list[Any]:
        with db_session:
            return below(LIMIT)

    expected = run()
    assert benchmark(run) == expected


def test_cache_values_ponykit_cached_query_sessionless(benchmark: Any, env: Any) -> None:
    _setup(benchmark, f"cache-values-20-{env.name}", "ponykit-cached-query-no-session")

    @cached_query
    def below(limit: int) -> Any:
        return select((i.name, i.qty) for i in env.KitItem if i.qty < limit).order_by(1)

    expected = below(LIMIT)
    assert benchmark(below, LIMIT) == expected


# -- entities ----------------------------------------------------------------------------------------------


def test_cache_entities_pony(benchmark: Any, env: Any) -> None:
    _setup(benchmark, f"cache-entities-20-{env.name}", "pony")

    def run() -> list[Any]:
        with db_session:
            items = list(_entities_query(env.PonyItem))
            return [(i.id, i.name, i.price) for i in items]

    assert len(benchmark(run)) == LIMIT


def test_cache_entities_ponykit_hit(benchmark: Any, env: Any) -> None:
    _setup(benchmark, f"cache-entities-20-{env.name}", "ponykit-hit")

    def run() -> list[Any]:
        with db_session:
            items = cached_select(_entities_query(env.KitItem))
            return [(i.id, i.name, i.price) for i in items]

    expected = run()
    assert benchmark(run) == expected


def test_cache_entities_ponykit_cached_query(benchmark: Any, env: Any) -> None:
    _setup(benchmark, f"cache-entities-20-{env.name}", "ponykit-cached-query")

    @cached_query
    def below(limit: int) -> Any:
        return select(i for i in env.KitItem if i.qty < limit).order_by(env.KitItem.id)

    def run() -> list[Any]:
        with db_session:
            return [(i.id, i.name, i.price) for i in below(LIMIT)]

    expected = run()
    assert benchmark(run) == expected


def test_cache_entities_ponykit_miss(benchmark: Any, env: Any) -> None:
    _setup(benchmark, f"cache-entities-20-{env.name}", "ponykit-miss")
    cache = env.kit.cache
    names = db_state(env.kit).gen_names([env.KitItem.__name__])

    def run() -> list[Any]:
        cache.bump(names)  # a commit happened: every call misses, runs the query and stores the rows
        with db_session:
            items = cached_select(_entities_query(env.KitItem))
            return [(i.id, i.name, i.price) for i in items]

    assert len(benchmark(run)) == LIMIT


# -- @cached -----------------------------------------------------------------------------------------------


@pytest.mark.bench_backends("sqlite")
def test_cache_function_cachetools(benchmark: Any, env: Any) -> None:
    _setup(benchmark, "cache-function-hit", "cachetools")
    store: cachetools.TTLCache[Any, Any] = cachetools.TTLCache(maxsize=1000, ttl=300)
    store[("summary", 2024)] = {"count": 20, "total": "1234.50", "names": ["a", "b", "c"]}
    assert benchmark(store.get, ("summary", 2024))["count"] == 20


@pytest.mark.bench_backends("sqlite")
def test_cache_function_ponykit(benchmark: Any, env: Any) -> None:
    _setup(benchmark, "cache-function-hit", "ponykit")

    @cached(depends_on=[env.KitItem])
    def summary(year: int) -> dict[str, Any]:
        with db_session:
            rows = _values_query(env.KitItem)[:]
        return {"count": len(rows), "total": "1234.50", "names": [r[0] for r in rows][:3]}

    summary(2024)
    assert benchmark(summary, 2024)["count"] == LIMIT
