"""The web integrations' replicas option: GET requests read from a replica, the pin travels in a cookie.

Against the real replicas (PostgreSQL's, and the MariaDB pair's with a GTID pin); without replicas, the
option only refuses writes in GET requests, which is tested on every backend.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from pony.orm import Database, PrimaryKey, Required, db_session

import ponykit as pk
from ponykit.binding._gtid import Gtid
from ponykit.binding._pins import token_pins
from ponykit.integrations.fastapi import PonyRoute, ReplicaReads, install
from ponykit.integrations.flask import Pony

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient warns about its httpx dependency
    from fastapi import FastAPI
    from fastapi.testclient import TestClient


def define(db: Database) -> Any:
    class Item(db.Entity):
        id = PrimaryKey(int)
        value = Required(int)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        Item(id=1, value=0)
    return Item


def on_replica(db: Database) -> bool:
    """True on a PostgreSQL standby or on the MariaDB pair's replica (read_only; the others are not)."""
    if db.provider.dialect == "PostgreSQL":
        return bool(db.select("SELECT pg_is_in_recovery()")[0])
    return db.provider.dialect == "MySQL" and int(db.select("SELECT @@read_only")[0]) == 1


def fastapi_app(db: Database, item: Any, replicas: Any) -> FastAPI:
    app = FastAPI()
    app.router.route_class = PonyRoute
    install(app, db=db, replicas=replicas)

    @app.get("/item")
    def read() -> dict[str, Any]:
        return {"value": item[1].value, "replica": on_replica(db)}

    @app.post("/item/{value}")
    def write(value: int) -> dict[str, Any]:
        item[1].value = value
        return {"value": value}

    @app.get("/sneaky")
    def sneaky() -> dict[str, Any]:
        item[1].value = -1
        return {}

    return app


def flask_app(db: Database, item: Any, replicas: Any) -> Flask:
    app = Flask(__name__)
    Pony(app, replicas=replicas)

    @app.get("/item")
    def read() -> dict[str, Any]:
        return {"value": item[1].value, "replica": on_replica(db)}

    @app.post("/item/<int:value>")
    def write(value: int) -> dict[str, Any]:
        item[1].value = value
        return {"value": value}

    @app.get("/sneaky")
    def sneaky() -> dict[str, Any]:
        item[1].value = -1
        return {}

    return app


class Client:
    """One HTTP client interface over FastAPI's and Flask's test clients."""

    def __init__(self, kind: str, db: Database, item: Any, replicas: Any) -> None:
        self.kind = kind
        if kind == "fastapi":
            self.http: Any = TestClient(fastapi_app(db, item, replicas), raise_server_exceptions=False)
        else:
            self.http = flask_app(db, item, replicas).test_client()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.http.get(path, **kwargs)

    def post(self, path: str) -> Any:
        return self.http.post(path)

    def json(self, response: Any) -> Any:
        return response.json() if self.kind == "fastapi" else response.get_json()

    def clear_cookies(self) -> None:
        if self.kind == "fastapi":
            self.http.cookies.clear()
        else:
            self.http._cookies.clear()


@pytest.fixture(params=["fastapi", "flask"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_get_requests_refuse_writes_without_replicas(db: Database, kind: str) -> None:
    item = define(db)
    client = Client(kind, db, item, True)
    assert client.json(client.get("/item"))["value"] == 0
    assert client.get("/sneaky").status_code == 500
    assert client.post("/item/3").status_code == 200
    with db_session:
        assert item[1].value == 3


def test_replicas_option_is_checked() -> None:
    with pytest.raises(pk.OptionError, match="on_write"):
        ReplicaReads(on_write="sometimes")
    with pytest.raises(pk.OptionError, match="replicas="):
        install(FastAPI(), replicas="yes")  # type: ignore[arg-type]


@pytest.fixture
def replicated(backend: Any, replica_control: Any) -> Iterator[tuple[Database, Any, Any]]:
    db = Database()
    pk.bind_url(db, backend.url, replicas=[replica_control.url_for(backend)])
    item = define(db)
    replica_control.wait_caught_up()
    yield db, item, replica_control
    db.disconnect()


@pytest.mark.backends("postgres")
def test_get_reads_replica_and_the_cookie_pins_the_next_request(
    replicated: tuple[Database, Any, Any], kind: str
) -> None:
    db, item, control = replicated
    client = Client(kind, db, item, ReplicaReads(secret="s"))
    first = client.json(client.get("/item"))
    assert first == {"value": 0, "replica": True}
    control.set_apply_delay(2000)
    response = client.post("/item/7")
    assert response.status_code == 200
    token = response.headers["X-Ponykit-Pin"]
    assert token.startswith("pk1.")
    # The next request sends the cookie back: its read sees the write (on the primary: the replica
    # applies 2 s late and the pin wait is shorter).
    assert client.json(client.get("/item")) == {"value": 7, "replica": False}
    # The same token in a header works as well; a forged one is ignored (stale replica read).
    client.clear_cookies()
    assert client.json(client.get("/item", headers={"X-Ponykit-Pin": token}))["value"] == 7
    forged = client.json(client.get("/item", headers={"X-Ponykit-Pin": token[:-2] + "xx"}))
    assert forged == {"value": 0, "replica": True}
    assert client.get("/sneaky").status_code == 500
    with db_session:
        assert item[1].value == 7


def test_mariadb_gtid_pin_travels_in_the_cookie(mariadb_replica_control: Any, kind: str) -> None:
    """The same round trip on MariaDB: the cookie and the header carry the GTID pin unchanged."""
    primary, replica = mariadb_replica_control.database()
    db = Database()
    pk.bind_url(db, primary, replicas=[replica])
    try:
        item = define(db)
        mariadb_replica_control.wait_caught_up()
        client = Client(kind, db, item, ReplicaReads(secret="s"))
        assert client.json(client.get("/item")) == {"value": 0, "replica": True}
        mariadb_replica_control.set_apply_delay(5)
        response = client.post("/item/7")
        assert response.status_code == 200
        token = response.headers["X-Ponykit-Pin"]
        pins = token_pins(token, secret="s")
        assert pins is not None and all(isinstance(p, Gtid) for p in pins.values())
        assert client.json(client.get("/item")) == {"value": 7, "replica": False}
        client.clear_cookies()
        assert client.json(client.get("/item", headers={"X-Ponykit-Pin": token}))["value"] == 7
        forged = client.json(client.get("/item", headers={"X-Ponykit-Pin": token[:-2] + "xx"}))
        assert forged == {"value": 0, "replica": True}
    finally:
        db.disconnect()
