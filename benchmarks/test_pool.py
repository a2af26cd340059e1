"""What the bounded pool costs per session, beside Pony's own one-connection-per-thread pool.

A ``db_session`` that touches the database costs one ``connect()`` and one ``release()`` of the
provider's pool (plus its statements, the same for every contender). Group ``pool-<backend>``, one
checkout and release per round, by Pony's pool and by ponykit's :class:`BoundedPool`:

* ``pony``: Pony's per-thread pool (the thread's connection; release rolls back, and on PostgreSQL runs
  ``DISCARD ALL``);
* ``bounded``: ``PoolConfig(max_size=8, pre_ping=False)``: the same reset plus a lock and a list;
* ``bounded-pre-ping``: ``PoolConfig(max_size=8)``: one more round trip to check the connection (a
  ``SELECT 1`` in autocommit on PostgreSQL, ``COM_PING`` on MariaDB, an in-process check on SQLite).

No ratio is asserted: the pool's CPU cost is a few microseconds (SQLite shows it alone), and the
pre-ping's round trip is the server's latency; docs/scaling.md reports the figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pony.orm import Database

import ponykit as pk

pytestmark = [pytest.mark.benchmark]

CONTENDERS = {
    "pony": None,
    "bounded": pk.PoolConfig(max_size=8, pre_ping=False),
    "bounded-pre-ping": pk.PoolConfig(max_size=8),
}


@pytest.fixture
def pool_of(bench_env: Any) -> Iterator[Any]:
    made: list[Database] = []

    def make(contender: str) -> Any:
        db = Database()
        pk.bind_url(db, bench_env.url, pool=CONTENDERS[contender])
        made.append(db)
        return db.provider.pool

    yield make
    for db in made:
        db.disconnect()


@pytest.mark.parametrize("contender", list(CONTENDERS))
def test_pool_checkout_and_release(benchmark: Any, bench_env: Any, pool_of: Any, contender: str) -> None:
    benchmark.group = f"pool-{bench_env.name}"
    pool = pool_of(contender)

    def cycle() -> None:
        con, _new = pool.connect()
        pool.release(con)

    benchmark(cycle)
