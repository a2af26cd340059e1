"""The apps the web tests and benchmarks serve with a real uvicorn, each in its own process.

``python tests/integrations/web_apps.py KIND URL PORT CONNECTIONS`` serves one app on 127.0.0.1:PORT,
bound to the database URL (its table ``web_row`` already exists). Kinds:

* ``ponyroute``: ``PonyRoute`` + ``install(app, connections=CONNECTIONS)``: sync endpoints;
* ``naive``: the common pattern ponykit replaces, a ``yield`` dependency doing ``with db_session:`` and
  a plain sync endpoint (FastAPI runs them in different threads);
* ``asyncdoc``: Pony's documented pattern, ``async def`` + ``with db_session:`` on the event loop;
* ``async_ok``: ``async def`` endpoints doing their database work with ``await pk.run_in_session``;
* ``nodb``: the ideal: a sync endpoint that only sleeps 50 ms (no database), on FastAPI's own threads.

Endpoints: ``POST /write/{n}`` (one row, an on_commit effect; answers with the transaction id and, for
``naive``, whether the endpoint ran in its own request's session), ``GET /sleep`` (a 50 ms query:
``pg_sleep``, MariaDB ``SLEEP``, a Python sleep inside the session on SQLite; answers with the server's
connection id), ``GET /effects``, ``GET /health``.
"""

from __future__ import annotations

import secrets
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from fastapi import Depends, FastAPI
from pony.orm import Database, Optional, Required, db_session

import ponykit as pk
from ponykit.transactions import transaction_id

SLEEP = 0.05


def declare(db: Database) -> Any:
    """The one table the web tests write: ``web_row``."""

    class WebRow(db.Entity):
        _table_ = "web_row"
        n = Required(int)
        note = Optional(str)

    return WebRow


def _sleep_query(db: Database) -> int:
    """Run one 50 ms statement in the current session; return the server's id of the connection (or 0)."""
    provider = db.provider_name
    if provider == "postgres":
        return int(db.select("select pg_backend_pid() from pg_sleep(0.05)")[0])
    if provider == "mysql":
        return int(db.select("select connection_id() + 0 * sleep(0.05)")[0])
    db.select("select 1")
    time.sleep(SLEEP)  # SQLite has no sleep function: hold the session (and its thread) as long
    return threading.get_ident()


def make_app(kind: str, url: str, connections: int) -> FastAPI:
    """The app of one ``kind`` (see the module documentation)."""
    db = Database()
    pk.bind_url(db, url)
    WebRow = declare(db)
    pk.attach(db)
    db.generate_mapping(create_tables=False)
    effects: list[int] = []
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/effects")
    def get_effects() -> dict[str, Any]:
        return {"count": len(effects), "distinct": len(set(effects))}

    if kind == "nodb":

        @app.get("/sleep")
        def nodb_sleep() -> dict[str, Any]:
            time.sleep(SLEEP)
            return {"conn": 0}

        return app

    if kind == "ponyroute":
        from ponykit.integrations.fastapi import PonyRoute, install

        app.router.route_class = PonyRoute
        install(app, db=db, connections=connections)

        @app.post("/write/{n}")
        def write(n: int) -> dict[str, Any]:
            WebRow(n=n)
            pk.on_commit(lambda: effects.append(n))
            return {"txid": transaction_id(db), "own": True}

        @app.get("/sleep")
        def sleep() -> dict[str, Any]:
            return {"conn": _sleep_query(db)}

    elif kind == "async_ok":
        from ponykit.integrations.fastapi import PonyRoute, async_ok, install

        app.router.route_class = PonyRoute
        install(app, db=db, connections=connections)

        def write_row(n: int) -> dict[str, Any]:
            WebRow(n=n)
            pk.on_commit(lambda: effects.append(n))
            return {"txid": transaction_id(db), "own": True}

        @app.post("/write/{n}")
        @async_ok
        async def write_async(n: int) -> dict[str, Any]:
            return await pk.run_in_session(write_row, n)

        @app.get("/sleep")
        @async_ok
        async def sleep_async() -> dict[str, Any]:
            return {"conn": await pk.run_in_session(_sleep_query, db)}

    elif kind == "naive":
        sessions: dict[int, str] = {}  # thread id -> marker of the request whose dependency opened it

        def session() -> Iterator[str]:
            with db_session:
                marker = secrets.token_hex(8)
                sessions[threading.get_ident()] = marker
                yield marker

        @app.post("/write/{n}")
        def write_naive(n: int, marker: str = Depends(session)) -> dict[str, Any]:
            own = sessions.get(threading.get_ident()) == marker
            WebRow(n=n)
            pk.on_commit(lambda: effects.append(n))
            return {"txid": transaction_id(db), "own": own}

    elif kind == "asyncdoc":

        @app.get("/sleep")
        async def sleep_doc() -> dict[str, Any]:
            with db_session:
                return {"conn": _sleep_query(db)}

    else:
        raise SystemExit(f"unknown app kind {kind!r}")
    return app


def main(argv: list[str]) -> None:
    """Serve ``make_app(KIND, URL, CONNECTIONS)`` on 127.0.0.1:PORT until killed."""
    import uvicorn

    kind, url, port, connections = argv[1], argv[2], int(argv[3]), int(argv[4])
    app = make_app(kind, url, connections)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main(sys.argv)
