"""A to-one relation column against a plain int column in bulk_insert (issue #22 item 3).

Group ``bulk-relation-<N>-<backend>`` (N = 100,000 rows, 1,000 with ``--benchmark-disable``), on SQLite
(``sqlite_mem`` too when named in ``PONYKIT_BENCH_BACKENDS``: no disk, whose cost swamps the rest on a
busy machine) and PostgreSQL. The same rows (a title, a quantity and the id of one of 100 authors) go
into two tables that differ only in that column: ``bench_rel_book.author`` is ``Required(Author)`` (Pony
maps a foreign key and an index), ``bench_int_book.author`` is ``Required(int, index=True)`` (the same
index, no foreign key).
Contenders:

* ``ponykit-int``: bulk_insert of the int rows into ``bench_int_book``;
* ``ponykit-key`` / ``ponykit-object``: bulk_insert into ``bench_rel_book`` with each row's author as its
  key, or as an ``Author`` object of the session (the session is opened and the objects are put into
  the rows before the timing; bulk_insert and the commit are timed);
* ``raw-int`` / ``raw-relation``: the raw driver's fastest way (COPY on PostgreSQL, executemany on
  SQLite) into each table: the database's own cost of the foreign key (PostgreSQL checks it row by row,
  in a trigger) is in ``raw-relation`` too;
* ``ponykit-key-nofk`` / ``ponykit-object-nofk``: the same into ``bench_nofk_book``, mapped as
  ``bench_rel_book`` is but with its foreign-key constraint taken off after mapping (PostgreSQL drops it;
  SQLite gets the table again from Pony's DDL without ``REFERENCES``): the same relation column for
  ponykit, the same work as the int column for the database.

``test_relation_targets`` times the contenders in turns (paired rounds, 9) and checks the issue's target
where the database does the same work: ``ponykit-key-nofk`` and ``ponykit-object-nofk`` at most 1.1x
``ponykit-int``. The ratios of the tables with the foreign key are printed beside them: there the
database's own check (``raw-relation / raw-int``: PostgreSQL checks a foreign key row by row, in a
trigger) comes on top for any client.
"""

from __future__ import annotations

import io
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pony import orm
from pony.orm import db_session

import ponykit

pytestmark = pytest.mark.benchmark

AUTHORS = 100
CONTENDERS = [
    "raw-int",
    "raw-relation",
    "ponykit-int",
    "ponykit-key",
    "ponykit-object",
    "ponykit-key-nofk",
    "ponykit-object-nofk",
]


TARGET = 1.1


@dataclass(frozen=True)
class Work:
    """One contender's timed ``run``, the table it fills, and what it does before the timing."""

    run: Callable[[], Any]
    table: str
    prepare: Callable[[], Any] = lambda: None


class Tables:
    """The author and the two book tables on one backend, mapped by a ponykit-attached Database."""

    def __init__(self, env: Any) -> None:
        self.env = env
        db = self.db = orm.Database()
        ponykit.bind_url(db, env.url)

        class Author(db.Entity):  # type: ignore[name-defined]
            _table_ = "bench_rel_author"
            name = orm.Required(str)
            books = orm.Set("RelBook")
            unchecked = orm.Set("NoFkBook")

        class RelBook(db.Entity):  # type: ignore[name-defined]
            _table_ = "bench_rel_book"
            title = orm.Required(str)
            qty = orm.Required(int)
            author = orm.Required(Author)

        class IntBook(db.Entity):  # type: ignore[name-defined]
            _table_ = "bench_int_book"
            title = orm.Required(str)
            qty = orm.Required(int)
            author = orm.Required(int, index=True)

        class NoFkBook(db.Entity):  # type: ignore[name-defined]
            _table_ = "bench_nofk_book"
            title = orm.Required(str)
            qty = orm.Required(int)
            author = orm.Required(Author)

        self.Author, self.RelBook, self.IntBook, self.NoFkBook = Author, RelBook, IntBook, NoFkBook
        ponykit.attach(db)
        db.generate_mapping(create_tables=True)
        _drop_foreign_key(env, "bench_nofk_book")
        with db_session:
            if not Author.exists():
                for i in range(AUTHORS):
                    Author(name=f"author {i}")

    def rows(self, n: int) -> list[dict[str, Any]]:
        """``n`` rows whose author is one of the 100 authors' ids (1..100)."""
        return [{"title": f"book {i}", "qty": i % 1000, "author": i % AUTHORS + 1} for i in range(n)]

    def empty(self) -> None:
        """Empty both book tables (outside the timing)."""
        cur = self.env.admin().cursor()
        try:
            for table in ("bench_rel_book", "bench_int_book", "bench_nofk_book"):
                cur.execute(
                    f"TRUNCATE {table}" if self.env.provider == "postgres" else f"DELETE FROM {table}"
                )
        finally:
            cur.close()

    def count(self, table: str) -> int:
        """Rows in ``table`` now."""
        cur = self.env.admin().cursor()
        try:
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            return int(cur.fetchone()[0])
        finally:
            cur.close()

    def work(self, contender: str, rows: list[dict[str, Any]]) -> Work:
        """The contender's work."""
        if contender.startswith("raw-"):
            table = "bench_int_book" if contender == "raw-int" else "bench_rel_book"
            return Work(lambda: self._raw(table, rows), table)
        if contender == "ponykit-int":
            return Work(lambda: ponykit_insert(self.IntBook, rows), "bench_int_book")
        if contender == "ponykit-key":
            return Work(lambda: ponykit_insert(self.RelBook, rows), "bench_rel_book")
        if contender == "ponykit-key-nofk":
            return Work(lambda: ponykit_insert(self.NoFkBook, rows), "bench_nofk_book")
        return self._objects(rows, nofk=contender.endswith("-nofk"))

    def _objects(self, rows: list[dict[str, Any]], *, nofk: bool) -> Work:
        """Rows holding Author objects: the session is opened and the objects put into the rows before
        the timing (the objects must belong to the session that writes them); bulk_insert and the
        commit are timed, as for the other contenders."""
        ids = [r["author"] for r in rows]
        copies = [dict(r) for r in rows]
        entity, table = (self.NoFkBook, "bench_nofk_book") if nofk else (self.RelBook, "bench_rel_book")
        session: list[Any] = []

        def prepare() -> None:
            session.append(db_session())
            session[-1].__enter__()
            by_id = {a.id: a for a in self.Author.select()}
            for row, key in zip(copies, ids, strict=True):
                row["author"] = by_id[key]

        def run() -> None:
            try:
                ponykit.bulk_insert(entity, copies)
            finally:
                session.pop().__exit__(None, None, None)

        return Work(run, table, prepare)

    def _raw(self, table: str, rows: list[dict[str, Any]]) -> None:
        conn = self.env.raw_connect()
        cur = conn.cursor()
        if self.env.provider == "postgres":
            buf = io.StringIO("".join(f"{r['title']}\t{r['qty']}\t{r['author']}\n" for r in rows))
            cur.copy_expert(f"COPY {table} (title, qty, author) FROM STDIN", buf)
        else:
            values = [(r["title"], r["qty"], r["author"]) for r in rows]
            if table == "bench_rel_book":
                cur.execute("PRAGMA foreign_keys = true")  # as Pony's connections have it
            cur.executemany(f"INSERT INTO {table} (title, qty, author) VALUES (?, ?, ?)", values)
        conn.commit()
        conn.close()


def _drop_foreign_key(env: Any, table: str) -> None:
    """Take the foreign-key constraint off ``table`` (mapped by Pony with one): PostgreSQL drops it; SQLite,
    which cannot, gets the table again from Pony's own DDL without its ``REFERENCES`` clause."""
    cur = env.admin().cursor()
    try:
        if env.provider == "postgres":
            cur.execute(
                f"SELECT conname FROM pg_constraint WHERE conrelid = '{table}'::regclass AND contype = 'f'"
            )
            for (name,) in cur.fetchall():
                cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            return
        cur.execute("SELECT type, sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL", (table,))
        ddl = cur.fetchall()
        cur.execute(f"DROP TABLE {table}")
        for _kind, sql in sorted(ddl, key=lambda d: d[0] != "table"):  # the table first, then its indexes
            cur.execute(re.sub(r' REFERENCES "[^"]+" \("[^"]+"\)( ON DELETE [A-Z ]+?)?(?=,|\n|\))', "", sql))
    finally:
        cur.close()


def ponykit_insert(entity: Any, rows: list[dict[str, Any]]) -> None:
    """bulk_insert in its own db_session."""
    with db_session:
        ponykit.bulk_insert(entity, rows)


_tables: dict[str, Tables] = {}


@pytest.fixture
def tables(bench_env: Any) -> Tables:
    """The tables of this backend (mapped once per session)."""
    found = _tables.get(bench_env.name)
    if found is None:
        found = _tables[bench_env.name] = Tables(bench_env)
    return found


@pytest.fixture
def n(request: pytest.FixtureRequest) -> int:
    """Rows per run: 100,000 when timing, 1,000 in the CI smoke run."""
    return 1_000 if request.config.getoption("benchmark_disable") else 100_000


@pytest.mark.bench_backends("sqlite", "sqlite_mem", "postgres")
@pytest.mark.parametrize("contender", CONTENDERS)
def test_bulk_relation(
    benchmark: Any, bench_env: Any, tables: Tables, n: int, contender: str, request: pytest.FixtureRequest
) -> None:
    work = tables.work(contender, tables.rows(n))
    benchmark.group = f"bulk-relation-{n}-{bench_env.name}"
    benchmark.extra_info["contender"] = contender
    benchmark.extra_info["backend"] = bench_env.name
    rounds = 1 if request.config.getoption("benchmark_disable") else 5

    def setup() -> None:
        tables.empty()
        work.prepare()

    benchmark.pedantic(work.run, setup=setup, rounds=rounds, iterations=1)
    assert tables.count(work.table) == n


@pytest.mark.bench_backends("sqlite", "sqlite_mem", "postgres")
def test_relation_targets(bench_env: Any, tables: Tables, n: int, request: pytest.FixtureRequest) -> None:
    """The contenders in turns, 9 rounds; the paired median ratios (nothing checked when disabled).

    On SQLite the database works inside this process: the ratios are of this process's CPU time, which
    other processes of a busy machine do not disturb (the wall-clock ones are printed beside them). On
    PostgreSQL the server's work counts, so they are of wall-clock time.
    """
    rows = tables.rows(n)
    works = {c: tables.work(c, rows) for c in CONTENDERS}
    rounds = 1 if request.config.getoption("benchmark_disable") else 9
    wall: dict[str, list[float]] = {c: [] for c in works}
    cpu: dict[str, list[float]] = {c: [] for c in works}
    for _ in range(rounds):
        for contender, work in works.items():
            tables.empty()
            work.prepare()
            begin, begin_cpu = time.perf_counter(), time.process_time()
            work.run()
            cpu[contender].append(time.process_time() - begin_cpu)
            wall[contender].append(time.perf_counter() - begin)
    if request.config.getoption("benchmark_disable"):
        return
    in_process = bench_env.provider == "sqlite"
    failures = []
    for label, times in (("cpu", cpu), ("wall", wall)) if in_process else (("wall", wall),):
        checked = label == "cpu" or not in_process
        failures += _report(f"{bench_env.name} {n} rows, {label}", times, check=checked)
    assert not failures, failures


def _report(title: str, times: dict[str, list[float]], *, check: bool) -> list[str]:
    """Print the medians and ratios of one clock; the targets missed (when ``check``)."""

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    print(
        f"\n{title}, median s: "
        + ", ".join(f"{c}={statistics.median(t):.3f}" for c, t in times.items())
        + f"\n{title}: raw-relation/raw-int={ratio('raw-relation', 'raw-int'):.3f}x (the foreign key's cost)"
    )
    failures = []
    for contender in ("ponykit-key", "ponykit-object"):
        with_fk, same = ratio(contender, "ponykit-int"), ratio(f"{contender}-nofk", "ponykit-int")
        print(f"{title}: {contender}/ponykit-int={with_fk:.3f}x; without the foreign key: {same:.3f}x")
        if check and same > TARGET:
            failures.append(f"{title} {contender}-nofk: {same:.3f}x > {TARGET}x")
    return failures
