"""PonyRoute against a real uvicorn server on loopback: no lost writes, no shared sessions, no blocked loop.

Each test starts the app of ``web_apps.py`` in a child process, bound to the test's isolated database
(whose ``web_row`` table this process created), and fires concurrent requests at it. The row counts
are read back here, through a separate connection.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pony.orm import Database, db_session, select
from web_apps import declare
from webserver import Burst, fire, serve

import ponykit as pk

WRITES = 60


@pytest.fixture
def web_db(db: Database) -> tuple[Database, Any]:
    WebRow = declare(db)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return db, WebRow


def _committed(web_db: tuple[Database, Any]) -> list[int]:
    _, WebRow = web_db
    with db_session:
        return sorted(select(r.n for r in WebRow).without_distinct())


@pytest.mark.parametrize("kind", ["ponyroute", "async_ok"])
def test_60_concurrent_writing_requests_all_commit_in_their_own_session(
    backend: Any, web_db: tuple[Database, Any], kind: str
) -> None:
    with serve(kind, backend.url, connections=8) as base:
        burst = fire(base, "POST", [f"/write/{i}" for i in range(WRITES)])
        effects = httpx.get(base + "/effects").json()
    assert burst.statuses == [200] * WRITES, burst.bodies
    txids = [body["txid"] for body in burst.bodies]
    assert None not in txids
    assert len(set(txids)) == WRITES, "two requests shared a transaction"
    assert effects == {"count": WRITES, "distinct": WRITES}
    assert _committed(web_db) == list(range(WRITES))


@pytest.mark.backends("postgres")
def test_the_naive_yield_dependency_pattern_mixes_sessions_across_requests(
    backend: Any, web_db: tuple[Database, Any]
) -> None:
    # Why the integration exists (peers-2 P2): FastAPI enters the dependency's db_session in one
    # threadpool thread and runs the endpoint in another, so the endpoint writes into whatever session
    # a previous request's dependency left open in its thread.
    with serve("naive", backend.url, connections=8) as base:
        # Some requests hang on a lock held by a session nobody will end: do not wait long for them.
        burst = fire(base, "POST", [f"/write/{i}" for i in range(WRITES)], timeout=8)
    own = sum(1 for body in burst.bodies if isinstance(body, dict) and body.get("own") is True)
    committed = len(_committed(web_db))
    ok = burst.statuses.count(200)
    # Measured here: 42 answered 200, 6 ran in their own session, 20 of 60 rows committed.
    assert own < WRITES, (
        f"every endpoint ran in its own session ({ok} answered 200, {committed} rows committed)"
    )


def _best(base: str, runs: int = 4, requests: int = 20) -> Burst:
    fire(base, "GET", ["/sleep"] * requests)  # warm up: threads and their connections
    bursts = [fire(base, "GET", ["/sleep"] * requests) for _ in range(runs)]
    return min(bursts, key=lambda b: b.seconds)


def _server_connections(db: Database, backend: str, ids: set[int]) -> int | None:
    """How many of the connection ids the server still has open (None on SQLite: no server)."""
    if backend == "sqlite":
        return None
    marks = ",".join(str(int(i)) for i in ids)
    with db_session:
        if backend == "postgres":
            return int(db.select(f"select count(*) from pg_stat_activity where pid in ({marks})")[0])
        return int(db.select(f"select count(*) from information_schema.processlist where id in ({marks})")[0])


@pytest.mark.parametrize("kind", ["ponyroute", "async_ok"])
def test_20_concurrent_50ms_queries_run_in_parallel_within_the_budget(
    backend: Any, web_db: tuple[Database, Any], kind: str
) -> None:
    # The 1.3x-of-ideal figure is measured by benchmarks/test_web.py (timings are the benchmarks' job);
    # here: the 20 requests overlap (one after the other they take 1 s) on at most 20 connections.
    with serve(kind, backend.url, connections=20) as base:
        burst = _best(base)
        assert set(burst.statuses) == {200}, burst.bodies
        ids = {body["conn"] for body in burst.bodies}
        open_now = _server_connections(web_db[0], backend.name, ids)
    assert len(ids) <= 20
    if open_now is not None:
        assert open_now <= 20
    assert burst.seconds < 0.5, f"{kind}: 20 x 50 ms took {burst.seconds:.3f} s: the requests did not overlap"


def test_the_connection_budget_caps_the_connections_opened(
    backend: Any, web_db: tuple[Database, Any]
) -> None:
    budget = 4
    with serve("ponyroute", backend.url, connections=budget) as base:
        bursts = [fire(base, "GET", ["/sleep"] * 20) for _ in range(2)]
        ids: set[int] = {body["conn"] for burst in bursts for body in burst.bodies}
        open_now = _server_connections(web_db[0], backend.name, ids)
    assert all(set(b.statuses) == {200} for b in bursts)
    assert len(ids) <= budget
    if open_now is not None:
        assert open_now <= budget
    # 20 requests through 4 connections: at least 5 rounds of 50 ms.
    assert min(b.seconds for b in bursts) >= 5 * 0.05 * 0.95


@pytest.mark.backends("postgres")
def test_pony_documented_async_pattern_blocks_the_event_loop(
    backend: Any, web_db: tuple[Database, Any]
) -> None:
    # Why async endpoints are refused (peers-2 P3): Pony's documented `async def` + `with db_session:`
    # runs each query on the event loop, one after the other.
    with serve("asyncdoc", backend.url) as base:
        doc = fire(base, "GET", ["/sleep"] * 20)
    with serve("ponyroute", backend.url, connections=20) as base:
        routed = _best(base, runs=2)
    assert doc.seconds >= 20 * 0.05 * 0.95
    assert doc.seconds > 3 * routed.seconds
