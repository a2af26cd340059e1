"""Query helpers against plain Pony, peewee and the raw driver: keyset depth and nested prefetch.

Own tables next to ``bench_item`` (seeded once per session with the raw driver):

* ``qbench_row``: N rows (1,000,000; 2,000 with ``--benchmark-disable``) with a duplicated ``rank`` and an
  index on ``(rank, id)``. Group ``keyset-<backend>``: ``paginate_keyset`` on the first page and at depth
  0.99 N, the same hand-written Pony keyset query at that depth, Pony's ``.page()`` at that depth, and the
  raw driver. Targets: depth / first page <= 1.2, ponykit / hand-written Pony <= 1.2.
* ``qbench_parent`` x ``qbench_child``: 1,000 parents x 10 children (50 x 10 when disabled). Group
  ``prefetch-<backend>``: ``ponykit.query.prefetch``, Pony's ``Query.prefetch``, peewee's ``prefetch()``
  and two raw queries, each loading the parents and touching every child. Targets: ponykit runs <= 3
  queries and is faster than Pony and peewee.

``test_query_targets`` checks the ratios after the timed runs of its backend.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from pony.orm import Database, PrimaryKey, Required, Set, composite_index, db_session, select

import ponykit as pk
from ponykit.diagnostics import count_queries
from ponykit.query import paginate_keyset, prefetch

pytestmark = [pytest.mark.benchmark, pytest.mark.bench_backends("sqlite", "postgres")]

SECRET = os.urandom(32)
PER_PAGE = 20
_results: dict[tuple[str, str, str], float] = {}


def _disabled(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("benchmark_disable"))


class QueryBench:
    """Plain Pony and ponykit Databases over the query-benchmark tables of one backend."""

    def __init__(self, env: Any, rows: int, parents: int) -> None:
        self.env, self.rows, self.parents = env, rows, parents
        self.pony = self._database(attach=False)
        self.kit = self._database(attach=True)
        self._seed()

    def _database(self, attach: bool) -> Any:
        db = Database()
        pk.bind_url(db, self.env.url)

        class Row(db.Entity):
            _table_ = "qbench_row"
            id = PrimaryKey(int)
            rank = Required(int)
            label = Required(str)
            composite_index(rank, id)

        class Parent(db.Entity):
            _table_ = "qbench_parent"
            id = PrimaryKey(int)
            name = Required(str)
            children = Set("Child")

        class Child(db.Entity):
            _table_ = "qbench_child"
            id = PrimaryKey(int)
            name = Required(str)
            parent = Required(Parent, column="parent")

        if attach:
            pk.attach(db)
        db.generate_mapping(create_tables=not attach)  # the plain-Pony Database creates the tables
        db.Row, db.Parent, db.Child = Row, Parent, Child
        return db

    def _seed(self) -> None:
        conn = self.env.admin()
        cur = conn.cursor()
        p = self.env.placeholder
        cur.execute("SELECT COUNT(*) FROM qbench_row")
        if cur.fetchone()[0] != self.rows:
            for table in ("qbench_child", "qbench_parent", "qbench_row"):
                cur.execute(f"DELETE FROM {table}")
            rows = [(i, i // 3, f"row {i}") for i in range(1, self.rows + 1)]
            parents = [(i, f"parent {i}") for i in range(1, self.parents + 1)]
            children = [
                (i, f"child {i}", (i - 1) % self.parents + 1) for i in range(1, self.parents * 10 + 1)
            ]
            self._insert(cur, "qbench_row (id, rank, label)", rows, 3, p)
            self._insert(cur, "qbench_parent (id, name)", parents, 2, p)
            self._insert(cur, "qbench_child (id, name, parent)", children, 3, p)
            cur.execute("ANALYZE")
        cur.close()

    def _insert(self, cur: Any, target: str, rows: list[tuple[Any, ...]], width: int, p: str) -> None:
        if self.env.provider == "postgres":
            from psycopg2.extras import execute_values

            cur.execute("BEGIN")
            execute_values(cur, f"INSERT INTO {target} VALUES %s", rows, page_size=5000)
            cur.execute("COMMIT")
        else:
            cur.execute("BEGIN")
            cur.executemany(f"INSERT INTO {target} VALUES ({', '.join([p] * width)})", rows)
            cur.execute("COMMIT")

    def depth_cursor(self) -> tuple[str, tuple[int, int]]:
        """The next_cursor after row 0.99 N, and that row's ``(rank, id)``."""
        depth = int(self.rows * 0.99)
        with db_session:
            Row = self.kit.Row
            last = select(r for r in Row).order_by(Row.rank, Row.id).fetch(1, depth - 1)[0]
            return _cursor_for(self.kit, last), (last.rank, last.id)


def _cursor_for(db: Any, row: Any) -> str:
    # The next_cursor of a one-row page that ends at ``row``: a page of 1 starting right before it.
    from ponykit.query.cursor import encode_cursor, fingerprint

    Row = db.Row
    base = select(r for r in Row).order_by(Row.rank).order_by(None)
    bound = fingerprint("Row", base.get_sql(), "Row.rank:a,Row.id:a")
    return encode_cursor([row.rank, row.id], SECRET, bound)


_benches: dict[str, QueryBench] = {}


@pytest.fixture
def qb(bench_env: Any, request: pytest.FixtureRequest) -> QueryBench:
    """The query-benchmark tables on this backend, seeded once per session."""
    small = _disabled(request)
    key = f"{bench_env.name}-{small}"
    if key not in _benches:
        _benches[key] = QueryBench(bench_env, 2_000 if small else 1_000_000, 50 if small else 1_000)
    return _benches[key]


def _setup(benchmark: Any, group: str, env: Any, contender: str) -> None:
    benchmark.group = f"{group}-{env.name}"
    benchmark.extra_info["contender"] = contender
    benchmark.extra_info["backend"] = env.name


def _record(benchmark: Any, env: Any, group: str, contender: str) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        _results[(env.name, group, contender)] = stats.stats.median


# ---------------------------------------------------------------------------------------------------------
# Keyset pagination at depth


def test_keyset_first_page_ponykit(benchmark: Any, bench_env: Any, qb: QueryBench) -> None:
    _setup(benchmark, "keyset", bench_env, "ponykit-first-page")
    Row = qb.kit.Row

    def run() -> list[int]:
        with db_session:
            return [
                r.id
                for r in paginate_keyset(select(r for r in Row).order_by(Row.rank), PER_PAGE, secret=SECRET)
            ]

    assert benchmark(run) == list(range(1, PER_PAGE + 1))
    _record(benchmark, bench_env, "keyset", "first")


def test_keyset_depth_ponykit(benchmark: Any, bench_env: Any, qb: QueryBench) -> None:
    _setup(benchmark, "keyset", bench_env, "ponykit")
    Row = qb.kit.Row
    cursor, (_rank, last_id) = qb.depth_cursor()

    def run() -> list[int]:
        with db_session:
            page = paginate_keyset(
                select(r for r in Row).order_by(Row.rank), PER_PAGE, after=cursor, secret=SECRET
            )
            return [r.id for r in page.items]

    assert benchmark(run) == list(range(last_id + 1, last_id + 1 + PER_PAGE))
    _record(benchmark, bench_env, "keyset", "ponykit")


def test_keyset_depth_pony(benchmark: Any, bench_env: Any, qb: QueryBench) -> None:
    _setup(benchmark, "keyset", bench_env, "pony")
    Row = qb.pony.Row
    _cursor, (rank, last_id) = qb.depth_cursor()

    def run() -> list[int]:
        with db_session:
            q = select(
                r for r in Row if r.rank >= rank and (r.rank > rank or (r.rank == rank and r.id > last_id))
            )
            return [r.id for r in q.order_by(Row.rank, Row.id)[: PER_PAGE + 1]][:PER_PAGE]

    assert benchmark(run) == list(range(last_id + 1, last_id + 1 + PER_PAGE))
    _record(benchmark, bench_env, "keyset", "pony")


def test_keyset_depth_pony_offset(benchmark: Any, bench_env: Any, qb: QueryBench) -> None:
    _setup(benchmark, "keyset", bench_env, "pony-offset-page")
    Row = qb.pony.Row
    depth = int(qb.rows * 0.99)

    def run() -> list[int]:
        with db_session:
            return [
                r.id
                for r in select(r for r in Row)
                .order_by(Row.rank, Row.id)
                .page(depth // PER_PAGE + 1, PER_PAGE)
            ]

    assert benchmark(run) == list(range(depth + 1, depth + 1 + PER_PAGE))


def test_keyset_depth_raw(benchmark: Any, bench_env: Any, qb: QueryBench) -> None:
    _setup(benchmark, "keyset", bench_env, "raw")
    _cursor, (rank, last_id) = qb.depth_cursor()
    conn = bench_env.raw_connect()
    p = bench_env.placeholder
    sql = (
        f"SELECT id, rank, label FROM qbench_row WHERE rank >= {p} "
        f"AND (rank > {p} OR (rank = {p} AND id > {p})) ORDER BY rank, id LIMIT {PER_PAGE + 1}"
    )

    def run() -> list[int]:
        cur = conn.cursor()
        cur.execute(sql, (rank, rank, rank, last_id))
        ids = [row[0] for row in cur.fetchall()][:PER_PAGE]
        cur.close()
        conn.rollback()
        return ids

    assert benchmark(run) == list(range(last_id + 1, last_id + 1 + PER_PAGE))


# ---------------------------------------------------------------------------------------------------------
# Prefetch of parents x children


def _touch_pony(parents: list[Any]) -> int:
    return sum(len(c.name) for p in parents for c in p.children)


def test_prefetch_ponykit(benchmark: Any, bench_env: Any, qb: QueryBench) -> None:
    _setup(benchmark, "prefetch", bench_env, "ponykit")
    Parent = qb.kit.Parent

    def run() -> int:
        with db_session:
            return _touch_pony(prefetch(select(p for p in Parent), "children"))

    with db_session, count_queries() as counter:
        expected = _touch_pony(prefetch(select(p for p in Parent), "children"))
    assert counter.count <= 3, counter.report()
    benchmark.extra_info["queries"] = counter.count
    assert benchmark(run) == expected
    _record(benchmark, bench_env, "prefetch", "ponykit")


def test_prefetch_pony(benchmark: Any, bench_env: Any, qb: QueryBench) -> None:
    _setup(benchmark, "prefetch", bench_env, "pony")
    Parent = qb.pony.Parent

    def run() -> int:
        with db_session:
            return _touch_pony(select(p for p in Parent).prefetch(Parent.children)[:])

    assert benchmark(run) > 0
    _record(benchmark, bench_env, "prefetch", "pony")


def test_prefetch_peewee(benchmark: Any, bench_env: Any, qb: QueryBench) -> None:
    import peewee as pw

    _setup(benchmark, "prefetch", bench_env, "peewee")

    class PParent(pw.Model):
        id = pw.IntegerField(primary_key=True)
        name = pw.CharField()

        class Meta:
            table_name = "qbench_parent"

    class PChild(pw.Model):
        id = pw.IntegerField(primary_key=True)
        name = pw.CharField()
        parent = pw.ForeignKeyField(PParent, backref="children", column_name="parent")

        class Meta:
            table_name = "qbench_child"

    database = bench_env.peewee_db
    PParent.bind(database)
    PChild.bind(database)

    def run() -> int:
        with database.connection_context():
            parents = pw.prefetch(PParent.select(), PChild.select())
            return sum(len(c.name) for p in parents for c in p.children)

    assert benchmark(run) > 0
    _record(benchmark, bench_env, "prefetch", "peewee")


def test_prefetch_raw(benchmark: Any, bench_env: Any, qb: QueryBench) -> None:
    _setup(benchmark, "prefetch", bench_env, "raw")
    conn = bench_env.raw_connect()
    p = bench_env.placeholder

    def run() -> int:
        cur = conn.cursor()
        cur.execute("SELECT id, name FROM qbench_parent")
        parents = cur.fetchall()
        ids = [row[0] for row in parents]
        total = 0
        for i in range(0, len(ids), 999):
            chunk = ids[i : i + 999]
            cur.execute(
                f"SELECT id, name, parent FROM qbench_child WHERE parent IN ({', '.join([p] * len(chunk))})",
                chunk,
            )
            total += sum(len(row[1]) for row in cur.fetchall())
        cur.close()
        conn.rollback()
        return total

    assert benchmark(run) > 0


# ---------------------------------------------------------------------------------------------------------
# Targets


def test_query_targets(bench_env: Any, request: pytest.FixtureRequest) -> None:
    """The issue's ratios, checked on the medians measured above (nothing to check when disabled)."""
    if _disabled(request):
        return
    name = bench_env.name
    got = {k[2]: v for k, v in _results.items() if k[0] == name and k[1] == "keyset"}
    missing = {"first", "ponykit", "pony"} - got.keys()
    assert not missing, f"run the keyset benchmarks of {name} in the same session (missing {missing})"
    assert got["ponykit"] <= 1.2 * got["first"], (
        f"depth {got['ponykit']:.6f}s vs first page {got['first']:.6f}s"
    )
    assert got["ponykit"] <= 1.2 * got["pony"], (
        f"ponykit {got['ponykit']:.6f}s vs hand-written {got['pony']:.6f}s"
    )
    prefetch_results = {k[2]: v for k, v in _results.items() if k[0] == name and k[1] == "prefetch"}
    assert prefetch_results["ponykit"] < prefetch_results["pony"], prefetch_results
    assert prefetch_results["ponykit"] < prefetch_results["peewee"], prefetch_results
