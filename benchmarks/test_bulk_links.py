"""Many-to-many links: ponykit.bulk_link against the raw driver and plain Pony.

Group ``bulk-links-<N>-<backend>`` (N = 100,000 links, 1,000 with ``--benchmark-disable``): every contender
writes the same ``(book, tag)`` pairs into the link table Pony mapped for ``LBook.tags`` (1,000 books,
N / 1,000 tags each), starting each round from an empty link table (outside the timing).

* ``raw``: the floor. ``COPY ... FROM STDIN`` on PostgreSQL (the text built from the pairs in the timing),
  ``executemany`` of the plain INSERT on SQLite (with ``PRAGMA foreign_keys = ON``, as Pony's connections
  have it, so both check the same foreign keys).
* ``ponykit``: ``bulk_link(LBook.tags, pairs)`` with keys, in a ``db_session``.
* ``ponykit-objects``: the same with the objects of both sides loaded in the session beforehand (outside
  the timing), the way an import that just created them would call it.
* ``ponykit-existing``: one link in ten exists already, so every batch takes the path for links that may
  exist (PostgreSQL: the COPY fails on the duplicate, then ``INSERT ... ON CONFLICT DO NOTHING``).
* ``pony``: ``book.tags.add(tag)`` per link and a commit, on N / 20 links (it runs a query per ``add``
  on a collection not loaded): its time is multiplied by 20 in ``extra_info["scaled_seconds"]`` (the
  figure docs/performance.md compares).

``test_bulk_links_interleaved`` (``pytest -s benchmarks/test_bulk_links.py -k interleaved``) times the same
contenders taking turns round by round and prints, per contender, the best and median seconds and the
median over rounds of its ratio to ``raw`` in the same round: on a shared machine a burst of load then
weighs on both sides of each ratio alike. docs/performance.md quotes that run.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
from pony.orm import Database, PrimaryKey, Set, commit, db_session

import ponykit as pk

pytestmark = [pytest.mark.benchmark, pytest.mark.bench_backends("sqlite", "postgres")]

BOOKS = 1_000
PONY_SHARE = 20  # plain Pony writes 1/20 of the links; its time is scaled up


class LinkBench:
    """A plain Pony and a ponykit Database over the link-benchmark tables of one backend."""

    def __init__(self, env: Any, n: int) -> None:
        self.env = env
        self.n = n
        self.tags = max(1, n // BOOKS)
        self.pony = self._database(attach=False)
        self.kit = self._database(attach=True)
        link = pk._pony.many_to_many(self.kit.LBook.tags)
        assert link is not None
        self.table = link.table
        self.columns = link.owner_columns + link.other_columns
        self.pairs = [(b, t) for b in range(1, BOOKS + 1) for t in range(1, self.tags + 1)]
        self._seed()

    def _database(self, attach: bool) -> Any:
        db = Database()
        pk.bind_url(db, self.env.url)

        class LBook(db.Entity):
            _table_ = "lbench_book"
            id = PrimaryKey(int)
            tags = Set("LTag", table="lbench_book_tag")

        class LTag(db.Entity):
            _table_ = "lbench_tag"
            id = PrimaryKey(int)
            books = Set(LBook)

        if attach:
            pk.attach(db)
        db.generate_mapping(create_tables=not attach)  # the plain-Pony Database creates the tables
        db.LBook, db.LTag = LBook, LTag
        return db

    def _seed(self) -> None:
        cur = self.env.admin().cursor()
        p = self.env.placeholder
        cur.execute(f"DELETE FROM {self.table}")
        cur.execute("DELETE FROM lbench_book")
        cur.execute("DELETE FROM lbench_tag")
        cur.executemany(f"INSERT INTO lbench_book (id) VALUES ({p})", [(i,) for i in range(1, BOOKS + 1)])
        cur.executemany(f"INSERT INTO lbench_tag (id) VALUES ({p})", [(i,) for i in range(1, self.tags + 1)])
        cur.close()

    def truncate(self, existing: list[tuple[int, int]] = ()) -> None:  # type: ignore[assignment]
        """Empty the link table (then write ``existing`` links); PostgreSQL also vacuums it."""
        cur = self.env.admin().cursor()
        cur.execute(f"DELETE FROM {self.table}")
        if existing:
            p = self.env.placeholder
            cols = ", ".join(self.columns)
            cur.executemany(f"INSERT INTO {self.table} ({cols}) VALUES ({p}, {p})", existing)
        if self.env.provider == "postgres":
            cur.execute(f"VACUUM ANALYZE {self.table}")
        cur.close()

    def count(self) -> int:
        cur = self.env.admin().cursor()
        cur.execute(f"SELECT COUNT(*) FROM {self.table}")
        (found,) = cur.fetchone()
        cur.close()
        return int(found)


_benches: dict[str, LinkBench] = {}


@pytest.fixture
def lb(bench_env: Any, request: pytest.FixtureRequest) -> LinkBench:
    """The link-benchmark tables on this backend, created once per session."""
    n = 1_000 if request.config.getoption("benchmark_disable") else 100_000
    key = f"{bench_env.name}-{n}"
    if key not in _benches:
        _benches[key] = LinkBench(bench_env, n)
    return _benches[key]


CONTENDERS = ["raw", "ponykit", "ponykit-objects", "ponykit-existing", "pony"]


@pytest.mark.parametrize("contender", CONTENDERS)
def test_bulk_links(
    benchmark: Any, bench_env: Any, lb: LinkBench, contender: str, request: pytest.FixtureRequest
) -> None:
    env = bench_env
    benchmark.group = f"bulk-links-{lb.n}-{env.name}"
    benchmark.extra_info["contender"] = contender
    benchmark.extra_info["backend"] = env.name
    disabled = request.config.getoption("benchmark_disable")
    existing = lb.pairs[::10] if contender == "ponykit-existing" else []
    state: dict[str, Any] = {}
    setup = _setup(lb, contender, existing, state)
    fn = _link_fn(lb, contender, state)
    rounds = 1 if disabled or contender == "pony" else 5
    benchmark.pedantic(fn, setup=setup, rounds=rounds, iterations=1)
    expected = len(lb.pairs) // PONY_SHARE if contender == "pony" else len(lb.pairs)
    assert lb.count() == expected
    stats = getattr(benchmark, "stats", None)
    if contender == "pony" and stats is not None:
        benchmark.extra_info["scaled_seconds"] = stats.stats.median * PONY_SHARE


def _setup(
    lb: LinkBench, contender: str, existing: list[tuple[int, int]], state: dict[str, Any]
) -> Callable[[], None]:
    def setup() -> None:
        lb.truncate(existing)
        session = state.pop("session", None)
        if session is not None:
            session.__exit__(None, None, None)
        if contender == "ponykit-objects":
            # The objects of both sides in the session, as after creating them: outside the timing.
            session = db_session()
            session.__enter__()
            books = {b.id: b for b in lb.kit.LBook.select()}
            tags = {t.id: t for t in lb.kit.LTag.select()}
            state["session"] = session
            state["pairs"] = [(books[b], tags[t]) for b, t in lb.pairs]

    return setup


def _link_fn(lb: LinkBench, contender: str, state: dict[str, Any]) -> Callable[[], Any]:
    env = lb.env
    table, (owner_col, other_col) = lb.table, lb.columns
    if contender == "raw":

        def raw() -> None:
            conn = env.raw_connect()
            cur = conn.cursor()
            if env.provider == "postgres":
                text = "".join(f"{b}\t{t}\n" for b, t in lb.pairs)
                cur.copy_expert(f"COPY {table} ({owner_col}, {other_col}) FROM STDIN", io.StringIO(text))
            else:
                cur.execute("PRAGMA foreign_keys = ON")
                cur.executemany(f"INSERT INTO {table} ({owner_col}, {other_col}) VALUES (?, ?)", lb.pairs)
            conn.commit()
            conn.close()

        return raw
    if contender in ("ponykit", "ponykit-existing"):

        def kit() -> None:
            with db_session:
                pk.bulk_link(lb.kit.LBook.tags, lb.pairs)

        return kit
    if contender == "ponykit-objects":

        def kit_objects() -> None:
            pk.bulk_link(lb.kit.LBook.tags, state["pairs"])
            commit()
            state.pop("session").__exit__(None, None, None)

        return kit_objects
    pairs = lb.pairs[::PONY_SHARE]

    def pony() -> None:
        with db_session:
            book, tag = lb.pony.LBook, lb.pony.LTag
            for b, t in pairs:
                book[b].tags.add(tag[t])

    return pony


def test_bulk_links_interleaved(bench_env: Any, lb: LinkBench, request: pytest.FixtureRequest) -> None:
    """The contenders in turns (see the module docstring); nothing to time when benchmarks are disabled."""
    if request.config.getoption("benchmark_disable"):
        return
    rounds = 9
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for _ in range(rounds):
        for name in CONTENDERS:
            state: dict[str, Any] = {}
            existing = lb.pairs[::10] if name == "ponykit-existing" else []
            _setup(lb, name, existing, state)()
            fn = _link_fn(lb, name, state)
            start = time.perf_counter()
            fn()
            seconds = time.perf_counter() - start
            times[name].append(seconds * (PONY_SHARE if name == "pony" else 1))
    raw = times["raw"]
    lines = [
        f"{bench_env.name} {lb.n} links, {rounds} rounds: contender best/median s, paired median ratio to raw"
    ]
    for name, values in times.items():
        paired = statistics.median(v / r for v, r in zip(values, raw, strict=True))
        lines.append(f"  {name}: {min(values):.3f}/{statistics.median(values):.3f} {paired:.2f}x")
    print("\n" + "\n".join(lines))
