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
  key, or as an ``Author`` object of the session (the objects are put into the rows inside the timing:
  one dict assignment per row);
* ``raw-int`` / ``raw-relation``: the raw driver's fastest way (COPY on PostgreSQL, executemany on
  SQLite) into each table: the database's own cost of the foreign key (PostgreSQL checks it row by row,
  in a trigger) is in ``raw-relation`` too.

``test_relation_targets`` times the contenders in turns (paired rounds) and checks the issue's target:
ponykit's relation column costs at most 1.1x its int column plus the database's own foreign-key work
(``raw-relation`` - ``raw-int`` of the same round, which any client pays); the plain ratio to
``ponykit-int`` is printed beside it.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
from pony import orm
from pony.orm import db_session

import ponykit

pytestmark = pytest.mark.benchmark

AUTHORS = 100
CONTENDERS = ["raw-int", "raw-relation", "ponykit-int", "ponykit-key", "ponykit-object"]
TARGET = 1.1


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

        self.Author, self.RelBook, self.IntBook = Author, RelBook, IntBook
        ponykit.attach(db)
        db.generate_mapping(create_tables=True)
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
            for table in ("bench_rel_book", "bench_int_book"):
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

    def work(self, contender: str, rows: list[dict[str, Any]]) -> tuple[Callable[[], Any], str]:
        """The contender's run, and the table it fills."""
        if contender.startswith("raw-"):
            table = "bench_int_book" if contender == "raw-int" else "bench_rel_book"
            return (lambda: self._raw(table, rows)), table
        if contender == "ponykit-int":
            return (lambda: ponykit_insert(self.IntBook, rows)), "bench_int_book"
        if contender == "ponykit-key":
            return (lambda: ponykit_insert(self.RelBook, rows)), "bench_rel_book"
        ids = [r["author"] for r in rows]
        copies = [dict(r) for r in rows]

        def objects() -> None:
            with db_session:
                by_id = {a.id: a for a in self.Author.select()}
                for row, key in zip(copies, ids, strict=True):
                    row["author"] = by_id[key]
                ponykit.bulk_insert(self.RelBook, copies)

        return objects, "bench_rel_book"

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
    fn, table = tables.work(contender, tables.rows(n))
    benchmark.group = f"bulk-relation-{n}-{bench_env.name}"
    benchmark.extra_info["contender"] = contender
    benchmark.extra_info["backend"] = bench_env.name
    rounds = 1 if request.config.getoption("benchmark_disable") else 5
    benchmark.pedantic(fn, setup=tables.empty, rounds=rounds, iterations=1)
    assert tables.count(table) == n


@pytest.mark.bench_backends("sqlite", "sqlite_mem", "postgres")
def test_relation_targets(bench_env: Any, tables: Tables, n: int, request: pytest.FixtureRequest) -> None:
    """The contenders in turns, 9 rounds; the paired median ratios (nothing checked when disabled).

    On SQLite the database works inside this process: the ratios are of this process's CPU time, which
    other processes of a busy machine do not disturb (the wall-clock ones are printed beside them). On
    PostgreSQL the server's work counts, so they are of wall-clock time.
    """
    rows = tables.rows(n)
    works = {c: tables.work(c, rows)[0] for c in CONTENDERS}
    rounds = 1 if request.config.getoption("benchmark_disable") else 9
    wall: dict[str, list[float]] = {c: [] for c in CONTENDERS}
    cpu: dict[str, list[float]] = {c: [] for c in CONTENDERS}
    for _ in range(rounds):
        for contender, fn in works.items():
            tables.empty()
            begin, begin_cpu = time.perf_counter(), time.process_time()
            fn()
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

    # The relation column against the int column plus what the database itself spends on the foreign
    # key (raw-relation - raw-int, in the same round): ponykit's own cost of the relation.
    fk = [r - i for r, i in zip(times["raw-relation"], times["raw-int"], strict=True)]
    print(
        f"\n{title}, median s: "
        + ", ".join(f"{c}={statistics.median(t):.3f}" for c, t in times.items())
        + f"\n{title}: raw-relation/raw-int={ratio('raw-relation', 'raw-int'):.3f}x"
    )
    failures = []
    for contender in ("ponykit-key", "ponykit-object"):
        own = statistics.median(
            k / (i + f) for k, i, f in zip(times[contender], times["ponykit-int"], fk, strict=True)
        )
        print(
            f"{title}: {contender}/ponykit-int={ratio(contender, 'ponykit-int'):.3f}x; "
            f"/(ponykit-int + the database's foreign-key cost)={own:.3f}x"
        )
        if check and own > TARGET:
            failures.append(f"{title} {contender}: {own:.3f}x > {TARGET}x")
    return failures
