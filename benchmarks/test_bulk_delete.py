"""bulk_delete with Pony's cascade: 10,000 parents with 10 children each (100,000 child rows).

Group ``bulk-delete-cascade-<backend>``: ``raw``, the hand-written two-statement delete through the
driver (``DELETE FROM child WHERE parent IN (...)``, then the parents; on SQLite with foreign keys
enforced, as on every Pony connection, and as ``raw-fk-off`` without), against ``ponykit``
(``bulk_delete(Parent, ids)``, which follows the ``Set`` reverse of ``Required(Parent)``: Pony's default
cascade). Group ``bulk-delete-cascade-pony-<backend>``: the same at a tenth of the size (1,000 parents,
10,000 children), ``ponykit`` against Pony's per-object ``parent.delete()``, which loads each parent's
children and deletes row by row: compare per row. Each round starts from freshly seeded tables, outside
the timing; every contender commits its transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pony import orm

import ponykit

pytestmark = pytest.mark.benchmark

PARENT, CHILD = "bench_del_parent", "bench_del_child"
KIDS = 10


def _declare(db: orm.Database) -> Any:
    class Parent(db.Entity):  # type: ignore[name-defined]
        _table_ = PARENT
        id = orm.PrimaryKey(int)
        name = orm.Required(str)
        kids = orm.Set("Child")

    class Child(db.Entity):  # type: ignore[name-defined]
        _table_ = CHILD
        id = orm.PrimaryKey(int)
        parent = orm.Required(Parent)
        label = orm.Required(str)

    return Parent


class DeleteEnv:
    """The parent and child tables on one backend, a plain Pony Database and a ponykit one over them."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.pony_db = orm.Database()
        ponykit.bind_url(self.pony_db, env.url)
        self.PonyParent = _declare(self.pony_db)
        self.pony_db.generate_mapping(create_tables=True)
        self.kit_db = orm.Database()
        ponykit.bind_url(self.kit_db, env.url)
        self.KitParent = _declare(self.kit_db)
        ponykit.attach(self.kit_db)
        self.kit_db.generate_mapping(create_tables=False)

    def seed(self, parents: int) -> None:
        """Empty both tables, then ``parents`` parents (ids 1..n) with KIDS children each."""
        conn = self.env.admin()
        cur = conn.cursor()
        try:
            cur.execute(f"DELETE FROM {CHILD}")
            cur.execute(f"DELETE FROM {PARENT}")
            if self.env.provider == "postgres":
                cur.execute(
                    f"INSERT INTO {PARENT} (id, name) SELECT g, 'p' || g FROM generate_series(1, {parents}) g"
                )
                cur.execute(
                    f"INSERT INTO {CHILD} (id, parent, label) "
                    f"SELECT g, (g - 1) / {KIDS} + 1, 'c' || g FROM generate_series(1, {parents * KIDS}) g"
                )
            else:
                p = self.env.placeholder
                cur.execute("BEGIN")
                cur.executemany(
                    f"INSERT INTO {PARENT} (id, name) VALUES ({p}, {p})",
                    [(i, f"p{i}") for i in range(1, parents + 1)],
                )
                cur.executemany(
                    f"INSERT INTO {CHILD} (id, parent, label) VALUES ({p}, {p}, {p})",
                    [(i, (i - 1) // KIDS + 1, f"c{i}") for i in range(1, parents * KIDS + 1)],
                )
                cur.execute("COMMIT")
        finally:
            cur.close()

    def counts(self) -> tuple[int, int]:
        cur = self.env.admin().cursor()
        try:
            cur.execute(f"SELECT COUNT(*) FROM {PARENT}")
            parents = cur.fetchone()[0]
            cur.execute(f"SELECT COUNT(*) FROM {CHILD}")
            return parents, cur.fetchone()[0]
        finally:
            cur.close()


@pytest.fixture(scope="module")
def del_envs() -> dict[str, DeleteEnv]:
    return {}


def _delete_env(del_envs: dict[str, DeleteEnv], env: Any) -> DeleteEnv:
    if env.name not in del_envs:
        del_envs[env.name] = DeleteEnv(env)
    return del_envs[env.name]


def _fn(d: DeleteEnv, contender: str, ids: list[int]) -> Callable[[], Any]:
    if contender in ("raw", "raw-fk-off"):

        def raw() -> None:
            conn = d.env.raw_connect()
            try:
                cur = conn.cursor()
                if d.env.provider == "sqlite" and contender == "raw":
                    # Pony's SQLite connections enforce foreign keys (sqlite3's default is off): the
                    # same rules for both contenders. "raw-fk-off" shows what skipping them saves.
                    cur.execute("PRAGMA foreign_keys = ON")
                marks = ", ".join([d.env.placeholder] * len(ids))
                cur.execute(f"DELETE FROM {CHILD} WHERE parent IN ({marks})", ids)
                cur.execute(f"DELETE FROM {PARENT} WHERE id IN ({marks})", ids)
                conn.commit()
            finally:
                conn.close()

        return raw
    if contender == "ponykit":

        def kit() -> None:
            with orm.db_session:
                ponykit.bulk_delete(d.KitParent, ids)

        return kit

    def pony() -> None:
        with orm.db_session:
            for parent in d.PonyParent.select(lambda p: p.id in ids):
                parent.delete()

    return pony


def _bench(
    benchmark: Any, env: Any, d: DeleteEnv, group: str, contender: str, parents: int, rounds: int
) -> None:
    ids = list(range(1, parents + 1))
    benchmark.group = group
    benchmark.extra_info.update(
        contender=contender, backend=env.name, parents=parents, rows=parents * (KIDS + 1)
    )
    benchmark.pedantic(_fn(d, contender, ids), setup=lambda: d.seed(parents), rounds=rounds, iterations=1)
    assert d.counts() == (0, 0)


@pytest.mark.bench_backends("sqlite", "postgres")
@pytest.mark.parametrize("contender", ["raw", "raw-fk-off", "ponykit"])
def test_bulk_delete_cascade(
    benchmark: Any,
    bench_env: Any,
    del_envs: dict[str, DeleteEnv],
    contender: str,
    request: pytest.FixtureRequest,
) -> None:
    if contender == "raw-fk-off" and bench_env.provider != "sqlite":
        pytest.skip("foreign keys cannot be switched off per connection here")
    smoke = request.config.getoption("benchmark_disable")
    d = _delete_env(del_envs, bench_env)
    group = f"bulk-delete-cascade-{bench_env.name}"
    _bench(benchmark, bench_env, d, group, contender, 100 if smoke else 10_000, 1 if smoke else 5)


@pytest.mark.bench_backends("sqlite", "postgres")
@pytest.mark.parametrize("contender", ["ponykit", "pony"])
def test_bulk_delete_cascade_against_pony(
    benchmark: Any,
    bench_env: Any,
    del_envs: dict[str, DeleteEnv],
    contender: str,
    request: pytest.FixtureRequest,
) -> None:
    smoke = request.config.getoption("benchmark_disable")
    d = _delete_env(del_envs, bench_env)
    group = f"bulk-delete-cascade-pony-{bench_env.name}"
    _bench(benchmark, bench_env, d, group, contender, 100 if smoke else 1_000, 1 if smoke else 3)
