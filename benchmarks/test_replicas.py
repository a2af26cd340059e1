"""Replica routing: what it costs a session when no replica is configured, and a replica read beside a
primary read.

* ``test_no_replica_routing_overhead`` (every backend): without replicas nothing is installed (checked);
  ``replica_session()`` against ``db_session`` on the same Database, empty and with a one-row read.
  Target (issue 21): at most 2 µs more per session.
* ``test_replica_read_vs_primary_read`` (PostgreSQL with ``PONYKIT_TEST_REPLICA``) and
  ``test_replica_read_vs_primary_read_mariadb`` (the MariaDB pair, ``PONYKIT_TEST_MARIADB_REPLICA``):
  the same read in a ``replica_session()`` served by the replica against a ``db_session`` on the
  primary, beside the raw driver doing the same on each server, and the routed path against the primary
  server itself (a Database listing its primary as its replica). Target: at most 1.1x. The client and
  the server processes it talks to are pinned to two CPUs while it runs (see ``_pinned``).

The contenders take turns in every round and the medians of per-round figures are checked (the machine
drifts by ±10% over minutes). ``pytest -s benchmarks/test_replicas.py`` prints the figures for
docs/performance.md.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg2
import pymysql
import pytest
from pony.orm import Database, PrimaryKey, Required, db_session

import ponykit as pk

pytestmark = pytest.mark.benchmark

ROUNDS, CALLS = 40, 50
# The replica read: many short rounds, so that a drift of either server falls on every contender alike.
LONG_ROUNDS, SHORT_CALLS = 300, 10


def _rounds(
    contenders: dict[str, Callable[[], Any]], rounds: int = ROUNDS, calls: int = CALLS
) -> dict[str, list[float]]:
    """Seconds per call of each contender, per round; the contenders take turns (order alternates)."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(2):  # warm up: connections made, health known, caches filled
        for fn in contenders.values():
            fn()
    for round_no in range(rounds):
        names = list(contenders) if round_no % 2 else list(reversed(contenders))
        for name in names:
            fn = contenders[name]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls)
    return times


def _define(db: Database) -> Any:
    class ReplicaBench(db.Entity):
        id = PrimaryKey(int)
        value = Required(int)

    return ReplicaBench


def test_no_replica_routing_overhead(bench_env: Any, request: pytest.FixtureRequest) -> None:
    """Without replicas nothing is installed, so a ``db_session`` costs what plain Pony's does; what is
    left is ``replica_session()`` itself (one context variable, one check per statement). Measured on
    empty sessions (the routing machinery alone) and on a one-row read; best rounds compared."""
    if request.config.getoption("benchmark_disable"):
        return
    item = bench_env.KitItem
    bench_env.seed(10)
    assert pk.binding.replica_status(bench_env.kit_db) == {}  # no router: Pony's own pool

    def empty_plain() -> None:
        with db_session:
            pass

    def empty_replica() -> None:
        with pk.replica_session():
            pass

    def read_plain() -> None:
        with db_session:
            item[3]

    def read_replica() -> None:
        with pk.replica_session():
            item[3]

    empty = _rounds({"db_session": empty_plain, "replica_session": empty_replica})
    read = _rounds({"db_session": read_plain, "replica_session": read_replica})
    extra_empty = (min(empty["replica_session"]) - min(empty["db_session"])) * 1e6
    extra_read = (min(read["replica_session"]) - min(read["db_session"])) * 1e6
    print(
        f"\n{bench_env.name}: empty session {min(empty['db_session']) * 1e6:.2f} µs, replica_session() "
        f"{extra_empty:+.2f} µs; one-row read {min(read['db_session']) * 1e6:.1f} µs, replica_session() "
        f"{extra_read:+.2f} µs (best rounds, no replica configured)"
    )
    assert extra_empty <= 2.0, f"replica_session() adds {extra_empty:.2f} µs to a session (target 2 µs)"


@dataclass
class Pair:
    """A primary and its replica holding the benchmark table, for one kind of database."""

    name: str
    db: Database  # routed to the replica
    item: Any
    looped_item: Any  # of a Database whose "replica" is the primary server itself
    raw_primary: Any  # DB-API connections, one to each server
    raw_replica: Any
    # What Pony sends for a read session on the primary (the statements after the SELECT), and the
    # query naming the OS thread or process that serves a connection
    after_select: tuple[str, ...]
    server_process_sql: str


@pytest.fixture
def postgres_pair() -> Iterator[Pair]:
    """The benchmark table in a schema of its own on the primary, replayed by the replica."""
    primary, replica = os.environ.get("PONYKIT_TEST_POSTGRES"), os.environ.get("PONYKIT_TEST_REPLICA")
    if not primary or not replica:
        pytest.skip("needs PONYKIT_TEST_POSTGRES and PONYKIT_TEST_REPLICA (bash .ci/replica.sh start)")
    schema = "pk_bench_" + uuid.uuid4().hex[:10]
    # Undone in reverse, also when the setup fails part-way (the replica never replays the table, a
    # mapping error): connections closed before the schema is dropped, the admin connection last.
    with contextlib.ExitStack() as undo:
        admin = psycopg2.connect(**pk.parse_url(primary)[1])
        undo.callback(admin.close)
        admin.autocommit = True
        admin.cursor().execute(f'CREATE SCHEMA "{schema}"')
        undo.callback(admin.cursor().execute, f'DROP SCHEMA "{schema}" CASCADE')
        made = _make_pair(
            "postgres",
            _with_search_path(primary, schema),
            _with_search_path(replica, schema),
            _psycopg2_autocommit,
            undo,
        )
        yield Pair(*made, after_select=("DISCARD ALL",), server_process_sql="SELECT pg_backend_pid()")


def _with_search_path(url: str, schema: str) -> str:
    """``url`` with ``-c search_path=<schema>`` added to its ``options`` parameter; its other query
    parameters are kept as they are (ponykit reads a '+' as a plus sign, so they are not re-encoded)."""
    parts = urlsplit(url)
    setting = f"-c search_path={schema}"
    pieces, merged = [], False
    for piece in parts.query.split("&") if parts.query else []:
        raw_key, sep, raw_value = piece.partition("=")
        if sep and unquote(raw_key) == "options":
            piece = f"{raw_key}={quote(f'{unquote(raw_value)} {setting}'.strip(), safe='')}"
            merged = True
        pieces.append(piece)
    if not merged:
        pieces.append(f"options={quote(setting, safe='')}")
    return urlunsplit(parts._replace(query="&".join(pieces)))


@pytest.fixture
def mariadb_pair() -> Iterator[Pair]:
    """The benchmark table in a database of its own on the MariaDB pair's primary, replayed by its
    replica (``bash .ci/mariadb-replica.sh start``)."""
    replica = os.environ.get("PONYKIT_TEST_MARIADB_REPLICA")
    if not replica:
        pytest.skip("needs PONYKIT_TEST_MARIADB_REPLICA (bash .ci/mariadb-replica.sh start)")
    primary = os.environ.get("PONYKIT_TEST_MARIADB_PRIMARY") or "mysql://root@127.0.0.1:3307/test"
    name = "pk_bench_" + uuid.uuid4().hex[:10]

    def with_database(url: str) -> str:
        return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))

    with contextlib.ExitStack() as undo:  # as in postgres_pair: undone also when the setup fails
        admin = _pymysql_autocommit(**pk.parse_url(primary)[1])
        undo.callback(admin.close)
        admin.cursor().execute(f"CREATE DATABASE `{name}`")
        undo.callback(admin.cursor().execute, f"DROP DATABASE `{name}`")
        made = _make_pair(
            "mariadb", with_database(primary), with_database(replica), _pymysql_autocommit, undo
        )
        # Pony commits a read session on MariaDB, then its pool rolls back; a replica session skips the
        # COMMIT (it only read). The raw driver does the primary's work on both servers.
        yield Pair(
            *made,
            after_select=("COMMIT", "ROLLBACK"),
            server_process_sql="SELECT tid FROM information_schema.processlist WHERE id = CONNECTION_ID()",
        )


def _psycopg2_autocommit(**kwargs: Any) -> Any:
    con = psycopg2.connect(**kwargs)
    con.autocommit = True  # each statement its own transaction, as Pony's reads on PostgreSQL
    return con


def _pymysql_autocommit(**kwargs: Any) -> Any:
    if "db" in kwargs:  # Pony's spelling; PyMySQL's own is database
        kwargs["database"] = kwargs.pop("db")
    return pymysql.connect(**kwargs, autocommit=True)  # the COMMIT and ROLLBACK are sent explicitly


def _make_pair(
    name: str, primary: str, replica: str, connect: Callable[..., Any], undo: contextlib.ExitStack
) -> tuple[str, Database, Any, Any, Any, Any]:
    """The two Databases and the raw connections, each registered on ``undo`` as soon as it exists."""
    db = Database()
    undo.callback(db.disconnect)
    pk.bind_url(db, primary, replicas=[replica])
    item = _define(db)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    looped = Database()  # the same primary listed as its own replica: routed, on the same server
    undo.callback(looped.disconnect)
    pk.bind_url(looped, primary, replicas=[primary])
    looped_item = _define(looped)
    pk.attach(looped)
    looped.generate_mapping(create_tables=False)
    with db_session:
        for i in range(10):
            item(id=i, value=i)
    raw_primary = connect(**pk.parse_url(primary)[1])
    undo.callback(raw_primary.close)
    raw_replica = connect(**pk.parse_url(replica)[1])
    undo.callback(raw_replica.close)
    deadline = time.monotonic() + 30
    while True:  # the replica itself has replayed the table and its rows (not a router's fallback)
        cursor = raw_replica.cursor()
        with contextlib.suppress(Exception):  # not replayed yet: the table is missing
            cursor.execute("SELECT count(*) FROM replicabench")
            if cursor.fetchone()[0] == 10:
                break
        if time.monotonic() > deadline:
            pytest.fail(f"the {name} replica did not replay the benchmark table within 30 s")
        time.sleep(0.05)
    return name, db, item, looped_item, raw_primary, raw_replica


@pytest.mark.bench_backends("postgres")
def test_replica_read_vs_primary_read(
    bench_env: Any, postgres_pair: Pair, request: pytest.FixtureRequest
) -> None:
    """PostgreSQL streaming replica: see :func:`_replica_read`."""
    del bench_env  # runs once, on the postgres backend of the harness
    if not request.config.getoption("benchmark_disable"):
        _replica_read(postgres_pair)


@pytest.mark.bench_backends("mysql")
def test_replica_read_vs_primary_read_mariadb(
    bench_env: Any, mariadb_pair: Pair, request: pytest.FixtureRequest
) -> None:
    """MariaDB GTID replica: see :func:`_replica_read`."""
    del bench_env  # runs once, on the mysql backend of the harness
    if not request.config.getoption("benchmark_disable"):
        _replica_read(mariadb_pair)


def _replica_read(pair: Pair) -> None:
    """A one-row read in a ``replica_session()`` against the same read in a ``db_session`` on the
    primary. Two figures, each the median over many short interleaved rounds:

    * **routed, same server**: the replica path of a Database whose replica is the primary server
      itself, against its primary path: what the routing costs, with the server held equal;
    * **the real replica**: the replica path served by the replica, against the primary, with the two
      servers' own difference (the raw driver's, measured in the same rounds) taken out by subtraction.
      Dividing by the raw driver's ratio instead would scale the servers' difference by the share of
      the session's time that is not the server's.
    """
    db, item, looped_item = pair.db, pair.item, pair.looped_item
    looped_db = looped_item._database_

    def primary() -> None:
        with db_session:
            item[3]

    def replica() -> None:
        with pk.replica_session():
            item[3]

    def looped() -> None:
        with pk.replica_session():
            looped_item[3]

    def looped_primary() -> None:
        with db_session:
            looped_item[3]

    def driver(con: Any) -> Callable[[], None]:
        cursor = con.cursor()

        def read() -> None:
            cursor.execute("SELECT id, value FROM replicabench WHERE id = 3")
            cursor.fetchall()
            for sql in pair.after_select:
                cursor.execute(sql)

        return read

    def server_process(session: Callable[[], Any], database: Database) -> int:
        with session():
            return int(database.select(pair.server_process_sql)[0])

    def raw_process(con: Any) -> int:
        cursor = con.cursor()
        cursor.execute(pair.server_process_sql)
        return int(cursor.fetchone()[0])

    servers = [
        server_process(lambda: db_session, db),
        server_process(pk.replica_session, db),
        server_process(pk.replica_session, looped_db),
        server_process(lambda: db_session, looped_db),
        raw_process(pair.raw_primary),
        raw_process(pair.raw_replica),
    ]
    with _pinned(servers) as pinned:
        status_before = dict(pk.binding.replica_status(db)["sessions"])
        looped_before = dict(pk.binding.replica_status(looped_db)["sessions"])
        times = _rounds(
            {
                "primary": primary,
                "replica": replica,
                "looped": looped,
                "looped-primary": looped_primary,
                "raw-primary": driver(pair.raw_primary),
                "raw-replica": driver(pair.raw_replica),
            },
            rounds=LONG_ROUNDS,
            calls=SHORT_CALLS,
        )
    med = {name: statistics.median(t) for name, t in times.items()}

    def paired(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    same_server = paired("looped", "looped-primary")
    control = paired("looped-primary", "primary")  # two primary paths: the noise between two connections
    # per round: the replica session's extra time over the primary's, less the servers' own difference
    extra = statistics.median(
        (r - p) - (rr - rp)
        for r, p, rr, rp in zip(
            times["replica"], times["primary"], times["raw-replica"], times["raw-primary"], strict=True
        )
    )
    real = 1 + extra / med["primary"]
    measured = paired("replica", "primary")
    status = pk.binding.replica_status(db)["sessions"]
    served = status.get("replica", 0) - status_before.get("replica", 0)
    looped_status = pk.binding.replica_status(looped_db)["sessions"]
    looped_served = looped_status.get("replica", 0) - looped_before.get("replica", 0)
    print(
        f"\n{pair.name}: one-row read (medians of {LONG_ROUNDS} rounds of {SHORT_CALLS}): primary "
        f"{med['primary'] * 1e6:.0f} µs, replica {med['replica'] * 1e6:.0f} µs, routed to the primary "
        f"server {med['looped'] * 1e6:.0f} µs, raw driver {med['raw-primary'] * 1e6:.0f} / "
        f"{med['raw-replica'] * 1e6:.0f} µs; routed, same server: {same_server:.3f}x (two primary "
        f"connections against each other: {control:.3f}x); the real replica: {real:.3f}x with the "
        f"servers' difference taken out ({measured:.3f}x as measured); replica sessions served by the "
        f"replica: {served}, routed to the primary server: {looped_served}; {pinned}"
    )
    assert served >= LONG_ROUNDS * SHORT_CALLS  # every replica session was served by the replica
    # and the routed figure is the replica path's: no looped session fell back to its primary path
    assert looped_served >= LONG_ROUNDS * SHORT_CALLS, f"looped replica sessions: {looped_status}"
    assert same_server <= 1.1, (
        f"routing costs {same_server:.3f}x a primary read on the same server (target 1.1x)"
    )
    assert real <= 1.1, f"a replica read costs {real:.3f}x a primary read beside the driver (target 1.1x)"


@contextlib.contextmanager
def _pinned(servers: list[int]) -> Iterator[str]:
    """Put this process on one CPU and the server processes (PostgreSQL) or threads (MariaDB) it talks
    to on another, all the same one, for the ``with`` block; yields what was done, for the report.

    Each connection is served by its own server process or thread, and the scheduler places each one
    near or far from the client as it goes: measured here, one connection's round trip took 145 µs and
    another's 250 µs, persistently, for the same statement on the same server. Pinned, every
    contender's round trips cross between the same two CPUs. Needs the right to set the affinity of the
    server's processes (root, or the same user) and two CPUs; otherwise nothing is pinned.

    Every affinity changed is put back afterwards, also when pinning fails part-way: a server outlives
    the benchmark (MariaDB keeps a disconnected connection's thread in its cache and reuses it).
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        yield "not pinned (one CPU)"
        return
    previous: dict[int, set[int]] = {}  # pid or tid -> its affinity before (0: this process)
    try:
        try:
            for pid in [*servers, 0]:
                if pid not in previous:
                    previous[pid] = os.sched_getaffinity(pid)
                os.sched_setaffinity(pid, {cpus[1]} if pid else {cpus[0]})
        except OSError as exc:
            _restore(previous)
            previous.clear()
            yield f"not pinned ({exc.strerror})"
        else:
            yield f"client on CPU {cpus[0]}, its {len(set(servers))} server processes on CPU {cpus[1]}"
    finally:
        _restore(previous)


def _restore(previous: dict[int, set[int]]) -> None:
    """Give each pid or tid back its affinity; one that has gone (or may no longer be set) is left."""
    for pid, cpus in previous.items():
        with contextlib.suppress(OSError):  # ProcessLookupError included
            os.sched_setaffinity(pid, cpus)
