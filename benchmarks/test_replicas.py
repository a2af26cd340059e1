"""Replica routing: what it costs a session when no replica is configured, and a replica read beside a
primary read.

* ``test_no_replica_routing_overhead`` (every backend): without replicas nothing is installed (checked);
  ``replica_session()`` against ``db_session`` on the same Database, empty and with a one-row read.
  Target (issue 21): at most 2 µs more per session.
* ``test_replica_read_vs_primary_read`` (PostgreSQL with ``PONYKIT_TEST_REPLICA``): the same read in a
  ``replica_session()`` served by the replica against a ``db_session`` on the primary, through the
  router, each beside the raw driver doing the same on the same server. Target: at most 1.1x once the
  servers' own difference (the raw driver's ratio) is divided out.

Both take turns in every round and check the median of per-round figures (the machine drifts by ±10%
over minutes). ``pytest -s benchmarks/test_replicas.py`` prints the figures for docs/performance.md.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from pony.orm import Database, PrimaryKey, Required, db_session

import ponykit as pk

pytestmark = pytest.mark.benchmark

ROUNDS, CALLS = 40, 50


def _rounds(contenders: dict[str, Callable[[], Any]]) -> dict[str, list[float]]:
    """Seconds per call of each contender, per round; the contenders take turns (order alternates)."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_no in range(ROUNDS):
        names = list(contenders) if round_no % 2 else list(reversed(contenders))
        for name in names:
            fn = contenders[name]
            start = time.perf_counter()
            for _ in range(CALLS):
                fn()
            times[name].append((time.perf_counter() - start) / CALLS)
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


@pytest.fixture
def replicated() -> Iterator[tuple[Database, Any]]:
    primary, replica = os.environ.get("PONYKIT_TEST_POSTGRES"), os.environ.get("PONYKIT_TEST_REPLICA")
    if not primary or not replica:
        pytest.skip("needs PONYKIT_TEST_POSTGRES and PONYKIT_TEST_REPLICA (bash .ci/replica.sh start)")
    schema = "pk_bench_" + uuid.uuid4().hex[:10]
    admin = psycopg2.connect(**pk.parse_url(primary)[1])
    admin.autocommit = True
    admin.cursor().execute(f'CREATE SCHEMA "{schema}"')
    query = f"options=-c%20search_path%3D{schema}"

    def with_schema(url: str) -> str:
        return urlunsplit(urlsplit(url)._replace(query=query))

    db = Database()
    pk.bind_url(db, with_schema(primary), replicas=[with_schema(replica)])
    item = _define(db)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        for i in range(10):
            item(id=i, value=i)
    deadline = time.monotonic() + 30
    while True:  # the replica has the table and the rows
        with pk.replica_session():
            if db.select("SELECT count(*) FROM replicabench")[0] == 10:
                break
        if time.monotonic() > deadline:
            pytest.fail("the replica did not replay the benchmark table within 30 s")
        time.sleep(0.05)
    try:
        yield db, item
    finally:
        db.disconnect()
        admin.cursor().execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


@pytest.mark.bench_backends("postgres")
def test_replica_read_vs_primary_read(
    bench_env: Any, replicated: tuple[Database, Any], request: pytest.FixtureRequest
) -> None:
    del bench_env  # runs once, on the postgres backend of the harness
    if request.config.getoption("benchmark_disable"):
        return
    db, item = replicated

    def primary() -> None:
        with db_session:
            item[3]

    def replica() -> None:
        with pk.replica_session():
            item[3]

    primary_kwargs = dict(db.provider.pool.kwargs)
    replica_kwargs = dict(db.provider.pool.replicas[0].pool.kwargs)
    raw = {
        name: psycopg2.connect(**kwargs) for name, kwargs in (("p", primary_kwargs), ("r", replica_kwargs))
    }

    def driver(con: Any) -> Callable[[], None]:
        cursor = con.cursor()

        def read() -> None:  # what Pony sends for the session: the SELECT, then its pool's reset
            con.autocommit = True
            cursor.execute("SELECT id, value FROM replicabench WHERE id = 3")
            cursor.fetchall()
            con.rollback()
            cursor.execute("DISCARD ALL")
            con.autocommit = False

        return read

    times = _rounds(
        {
            "primary": primary,
            "replica": replica,
            "raw-primary": driver(raw["p"]),
            "raw-replica": driver(raw["r"]),
        }
    )
    for con in raw.values():
        con.close()
    ratio = statistics.median(r / p for r, p in zip(times["replica"], times["primary"], strict=True))
    pairs = zip(times["raw-replica"], times["raw-primary"], strict=True)
    servers = statistics.median(r / p for r, p in pairs)
    # Best rounds: the least disturbed by the other processes of a shared machine.
    best = (min(times["replica"]) / min(times["raw-replica"])) / (
        min(times["primary"]) / min(times["raw-primary"])
    )
    status = pk.binding.replica_status(db)["sessions"]
    print(
        f"\npostgres: one-row read, primary {min(times['primary']) * 1e6:.0f} µs, replica "
        f"{min(times['replica']) * 1e6:.0f} µs, raw driver {min(times['raw-primary']) * 1e6:.0f} / "
        f"{min(times['raw-replica']) * 1e6:.0f} µs (best rounds); median paired ratio {ratio:.3f}x, raw "
        f"driver {servers:.3f}x; replica read beside primary read, each over its raw driver: {best:.3f}x "
        f"(best rounds), {ratio / servers:.3f}x (medians); routing {status}"
    )
    assert status.get("replica", 0) >= ROUNDS * CALLS  # every replica session was served by the replica
    # The two servers differ by themselves (a standby builds its snapshots differently, other load):
    # the target is on what the routing adds, the paired ratio beside the raw driver's.
    assert best <= 1.1, f"a replica read costs {best:.3f}x a primary read beside the driver (target 1.1x)"
