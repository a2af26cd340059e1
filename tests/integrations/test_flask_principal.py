"""Pony(app, principal=fn): each Flask request acts as its own principal, on reused threads too."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask, request
from pony.orm import Database, Required, db_session

import ponykit as pk
from ponykit.errors import OptionError
from ponykit.integrations.flask import Pony
from ponykit.mixins import Audited
from ponykit.security import current_principal


class User:
    def __init__(self, id: str, permissions: tuple[str, ...] = ()) -> None:
        self.id = id
        self.permissions = frozenset(permissions)


def _principal(req: Any) -> User | None:
    name = req.headers.get("X-User")
    if name is None:
        return None
    if name == "expired":
        raise pk.PermissionDenied("the token has expired")
    return User(name, tuple(p for p in req.headers.get("X-Perms", "").split(",") if p))


@pytest.fixture
def web(db: Database) -> dict[str, Any]:
    class Note(db.Entity, Audited):
        _table_ = "flask_note"
        text = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    app = Flask(__name__)
    app.logger.disabled = True  # the failures below are expected
    Pony(app, principal=_principal)
    threads: set[int] = set()
    seen_before: list[Any] = []

    @app.before_request
    def check() -> None:
        seen_before.append(current_principal())  # the app's own hooks see the principal too

    @pk.requires("notes.write")
    def write(text: str) -> int:
        note = Note(text=text)
        return 0 if note.id is None else 1

    @app.get("/whoami")
    def whoami() -> dict[str, Any]:
        threads.add(threading.get_ident())
        time.sleep(float(request.args.get("pause", "0")))
        user = current_principal()
        return {"who": None if user is None else user.id}

    @app.post("/notes/<text>")
    def create(text: str) -> dict[str, Any]:
        write(text)
        return {"ok": True}

    @app.errorhandler(pk.PermissionDenied)
    def denied(exc: pk.PermissionDenied) -> tuple[str, int]:
        return "forbidden", 403

    return {"app": app, "Note": Note, "threads": threads, "seen_before": seen_before}


def test_each_of_60_concurrent_requests_sees_its_own_principal_on_reused_threads(web: dict[str, Any]) -> None:
    app = web["app"]
    names = [None if i % 3 == 0 else f"user-{i}" for i in range(60)]
    rng = random.Random(3)
    pauses = [rng.uniform(0, 0.01) for _ in names]

    def call(i: int) -> Any:
        headers = {} if names[i] is None else {"X-User": names[i]}
        answer = app.test_client().get(f"/whoami?pause={pauses[i]:.3f}", headers=headers)
        return answer.status_code, answer.get_json()["who"]

    barrier = threading.Barrier(4)

    def left_behind(_: int) -> Any:
        barrier.wait(timeout=10)  # one check on each of the 4 threads
        return current_principal()

    with ThreadPoolExecutor(max_workers=4) as pool:  # 4 threads serve the 60 requests, in turns
        answers = list(pool.map(call, range(60)))
        after = list(pool.map(left_behind, range(4)))
    assert answers == [(200, n) for n in names]
    assert after == [None] * 4  # the threads act as nobody once their requests ended
    assert 1 < len(web["threads"]) <= 4
    assert current_principal() is None


def test_requires_and_the_audit_actor_see_the_request_principal(web: dict[str, Any]) -> None:
    client = web["app"].test_client()
    assert client.post("/notes/a", headers={"X-User": "ann", "X-Perms": "notes.write"}).status_code == 200
    assert client.post("/notes/b", headers={"X-User": "bob"}).status_code == 403  # lacks notes.write
    assert client.post("/notes/c").status_code == 403  # nobody acting
    assert client.post("/notes/d", headers={"X-User": "expired"}).status_code == 403  # fn raised
    with db_session:
        notes = web["Note"].select()[:]
        assert [n.text for n in notes] == ["a"]  # the refused requests wrote nothing
        assert [(r.op, r.actor) for r in notes[0].history()] == [("insert", "ann")]
    assert [getattr(p, "id", None) for p in web["seen_before"]] == ["ann", "bob", None]


def test_principal_must_be_callable() -> None:
    with pytest.raises(OptionError, match="principal"):
        Pony(Flask(__name__), principal="X-User")  # type: ignore[arg-type]
