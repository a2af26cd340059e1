"""Web: 20 concurrent 50 ms queries through a real uvicorn, and the cost of ``run_in_session`` per call.

Group ``web-20x50ms-<backend>``: one burst of 20 concurrent ``GET /sleep`` requests, each running a 50 ms
statement (``pg_sleep``, MariaDB ``SLEEP``; on SQLite a 50 ms sleep inside the session), served by
uvicorn in a child process (``tests/integrations/web_apps.py``). Contenders:

* ``ideal``: a sync FastAPI endpoint that only sleeps 50 ms (no database): the floor for one batch of 20;
* ``ponyroute``: ``PonyRoute`` sync endpoint, ``install(app, connections=20)``;
* ``async_ok``: an ``async def`` endpoint awaiting ``pk.run_in_session`` (same budget);
* ``pony-async-doc``: Pony's documented pattern, ``async def`` + ``with db_session:`` on the event loop.

The target (issue 17): ``ponyroute`` and ``async_ok`` within 1.3x of ``ideal``
(``report.py out.json --baseline ideal``); ``pony-async-doc`` is the 20 x 50 ms it serializes into.

Group ``run-in-session-<backend>``: 200 sequential awaits of a primary-key read from asyncio, with
``await anyio.to_thread.run_sync(read_in_db_session)`` as the baseline and ``await pk.run_in_session(read)``
beside it: the per-call cost of the bounded pool and the context copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from pony.orm import Database, db_session

import ponykit as pk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integrations"))
from web_apps import declare
from webserver import fire, serve

pytestmark = pytest.mark.benchmark

WEB_CONTENDERS = ["ideal", "ponyroute", "async_ok", "pony-async-doc"]
KINDS = {"ideal": "nodb", "ponyroute": "ponyroute", "async_ok": "async_ok", "pony-async-doc": "asyncdoc"}
CALLS = 200


@pytest.fixture
def web_url(bench_env: Any) -> str:
    """The backend's URL, with the ``web_row`` table the web apps map."""
    db = Database()
    pk.bind_url(db, bench_env.url)
    declare(db)
    db.generate_mapping(create_tables=False, check_tables=False)
    # The session fixture's schema may have it already (an earlier contender made it).
    with contextlib.suppress(Exception):
        db.create_tables()
    db.disconnect()
    return bench_env.url


@pytest.mark.bench_backends("sqlite", "postgres")  # a server per contender: keep the CI smoke run short
@pytest.mark.parametrize("contender", WEB_CONTENDERS)
def test_web_20_concurrent_50ms_queries(benchmark: Any, bench_env: Any, web_url: str, contender: str) -> None:
    benchmark.group = f"web-20x50ms-{bench_env.name}"
    benchmark.extra_info["contender"] = contender
    benchmark.extra_info["backend"] = bench_env.name
    with serve(KINDS[contender], web_url, connections=20) as base:
        fire(base, "GET", ["/sleep"] * 20)  # warm up: threads and connections

        def burst() -> None:
            answers = fire(base, "GET", ["/sleep"] * 20)
            assert set(answers.statuses) == {200}, answers.bodies

        benchmark.pedantic(burst, rounds=5, iterations=1)


@pytest.mark.parametrize("contender", ["to_thread", "run_in_session"])
def test_run_in_session_per_call(benchmark: Any, bench_env: Any, contender: str) -> None:
    benchmark.group = f"run-in-session-{bench_env.name}"
    benchmark.extra_info["contender"] = contender
    benchmark.extra_info["backend"] = bench_env.name
    bench_env.seed(10)
    item = bench_env.KitItem

    def read() -> int:
        return int(item[3].qty)

    def read_in_session() -> int:
        with db_session:
            return read()

    async def calls() -> None:
        for _ in range(CALLS):
            if contender == "to_thread":
                await anyio.to_thread.run_sync(read_in_session)
            else:
                await pk.run_in_session(read)

    benchmark.extra_info["calls"] = CALLS
    benchmark.pedantic(lambda: asyncio.run(calls()), rounds=5, iterations=1)
