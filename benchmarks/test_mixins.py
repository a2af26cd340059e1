"""Entity mixins: what ``Timestamped`` adds to ``bulk_insert``.

Group ``mixins-timestamped-insert-<N>-<backend>`` (N = 10,000 rows, 200 with ``--benchmark-disable``):
``bulk_insert`` of the same rows (``{"name", "qty"}``) into three tables of one attached Database:

* ``plain``: the entity without timestamp columns (the issue's baseline: "Timestamped adds <= 1.1x");
* ``columns``: the same two ``AwareDatetime`` columns, filled by the caller (like for like: the cost of
  the mixin's code alone, not of storing two more columns);
* ``timestamped``: the entity with the mixin, rows without timestamps (the mixin fills them).

``test_timestamped_insert_ratio`` times the three interleaved (best of 7) and prints both ratios; with
timing on it checks the like-for-like ratio against 1.1x (the ratio to the narrower table is reported:
two more datetime columns cost what they cost on every ORM).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import pytest
from pony.orm import Database, Required, db_session

import ponykit as pk
from ponykit.mixins import Timestamped

pytestmark = pytest.mark.benchmark

_envs: dict[str, dict[str, Any]] = {}


def _n(request: pytest.FixtureRequest) -> int:
    return 200 if request.config.getoption("benchmark_disable") else 10_000


def _entities(bench_env: Any) -> dict[str, Any]:
    """The three entities on this backend, made once per process."""
    found = _envs.get(bench_env.name)
    if found is not None:
        return found
    db = Database()

    class BenchPlain(db.Entity):
        _table_ = "bench_mixins_plain"
        name = Required(str, 40)
        qty = Required(int)

    class BenchColumns(db.Entity):
        _table_ = "bench_mixins_columns"
        name = Required(str, 40)
        qty = Required(int)
        created_at = Required(pk.types.AwareDatetime, precision=6)
        updated_at = Required(pk.types.AwareDatetime, precision=6)

    class BenchStamped(db.Entity, Timestamped):
        _table_ = "bench_mixins_stamped"
        name = Required(str, 40)
        qty = Required(int)

    pk.bind_url(db, bench_env.url)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    found = _envs[bench_env.name] = {
        "plain": BenchPlain,
        "columns": BenchColumns,
        "timestamped": BenchStamped,
    }
    return found


def _rows(n: int, stamped: bool) -> list[dict[str, Any]]:
    if not stamped:
        return [{"name": f"item{i:06d}", "qty": i} for i in range(n)]
    now = dt.datetime.now(dt.timezone.utc)
    return [{"name": f"item{i:06d}", "qty": i, "created_at": now, "updated_at": now} for i in range(n)]


def _clear(entity: Any) -> Callable[[], None]:
    def clear() -> None:
        with db_session:
            entity.select().delete(bulk=True)

    return clear


def _insert(entity: Any, rows: list[dict[str, Any]]) -> Callable[[], int]:
    def run() -> int:
        with db_session:
            return pk.bulk_insert(entity, rows)

    return run


@pytest.mark.parametrize("contender", ["plain", "columns", "timestamped"])
def test_timestamped_bulk_insert(benchmark: Any, bench_env: Any, request: Any, contender: str) -> None:
    n = _n(request)
    entity = _entities(bench_env)[contender]
    benchmark.group = f"mixins-timestamped-insert-{n}-{bench_env.name}"
    benchmark.extra_info["contender"] = contender
    benchmark.extra_info["backend"] = bench_env.name
    rows = _rows(n, contender == "columns")
    rounds = 1 if request.config.getoption("benchmark_disable") else 5
    assert benchmark.pedantic(_insert(entity, rows), setup=_clear(entity), rounds=rounds) == n


@pytest.mark.bench_backends("sqlite", "postgres")
def test_timestamped_insert_ratio(bench_env: Any, request: Any) -> None:
    """The mixin's own cost on bulk_insert, like for like, is at most 1.1x (checked when timing is on)."""
    n = _n(request)
    entities = _entities(bench_env)
    runs = {name: _insert(e, _rows(n, name == "columns")) for name, e in entities.items()}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(1 if request.config.getoption("benchmark_disable") else 7):
        for name, run in runs.items():
            _clear(entities[name])()
            start = time.perf_counter()
            assert run() == n
            best[name] = min(best[name], time.perf_counter() - start)
    like = best["timestamped"] / best["columns"]
    narrow = best["timestamped"] / best["plain"]
    print(
        f"\n{bench_env.name}: bulk_insert {n} rows: plain {best['plain'] * 1e3:.1f} ms, caller-filled "
        f"columns {best['columns'] * 1e3:.1f} ms, Timestamped {best['timestamped'] * 1e3:.1f} ms; "
        f"ratio to the same columns {like:.2f}, to the table without them {narrow:.2f}"
    )
    for name in entities:
        _clear(entities[name])()
    if not request.config.getoption("benchmark_disable"):
        assert like <= 1.1, f"Timestamped bulk_insert {like:.2f}x the same columns filled by the caller"
