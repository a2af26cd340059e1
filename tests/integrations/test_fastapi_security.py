"""install(app, principal=fn), the security/versioning problems and the If-Match/ETag helpers, on FastAPI."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import warnings
from typing import Any

import httpx
import pytest
from pony.orm import Database, Required, Set, db_session, select

import ponykit as pk
from ponykit.errors import RLSContextError
from ponykit.mixins import Versioned
from ponykit.security import current_principal
from ponykit.transactions._async import session_executor

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient warns about its httpx dependency
    from fastapi import FastAPI, Request, Response
    from fastapi.testclient import TestClient
from pydantic import BaseModel

from ponykit.integrations.fastapi import PonyRoute, async_ok, check_if_match, install, set_etag

SECRET_ID = "user-7c1e-private"  # an identity that must never reach a problem body


class User:
    """A principal as an application would have one (the header names it; permissions by name)."""

    def __init__(self, id: str, permissions: tuple[str, ...] = ()) -> None:
        self.id = id
        self.team = id.split("-")[0]
        self.permissions = frozenset(permissions)


class DocIn(BaseModel):
    title: str


def _principal(request: Request) -> User | None:
    name = request.headers.get("x-user")
    if name is None:
        return None
    perms = tuple(p for p in request.headers.get("x-perms", "").split(",") if p)
    return User(name, perms)


@pytest.fixture
def web(db: Database) -> dict[str, Any]:
    class Team(db.Entity):
        name = Required(str)
        docs = Set("Doc")

    class Doc(db.Entity, Versioned):
        title = Required(str)
        team = Required(Team)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        red, blue = Team(name="red"), Team(name="blue")
        Doc(title="r1", team=red)
        Doc(title="b1", team=blue)

    # A policy: a principal sees the docs of the team its id starts with ("red-ann" sees red's).
    pk.policy(Doc, actions="*")(lambda d, user: d.team.name == user.team)

    @pk.requires("docs.admin")
    def admin_only() -> str:
        return "ok"

    app = FastAPI()
    app.router.route_class = PonyRoute
    install(app, db=db, connections=4, principal=_principal)
    threads: set[int] = set()

    @app.get("/whoami")
    def whoami(pause: float = 0.0) -> dict[str, Any]:
        threads.add(threading.get_ident())
        time.sleep(pause)  # other requests run meanwhile on the other session threads
        user = current_principal()
        return {"who": None if user is None else user.id}

    @app.get("/whoami-async")
    @async_ok
    async def whoami_async() -> dict[str, Any]:
        user = current_principal()
        inner = await pk.run_in_session(current_principal)
        return {"who": None if user is None else user.id, "inner": None if inner is None else inner.id}

    @app.get("/notes")
    def docs() -> list[str]:
        return sorted(d.title for d in pk.scoped(select(d for d in Doc)))

    @app.get("/admin")
    def admin() -> dict[str, str]:
        return {"result": admin_only()}

    @app.get("/rls")
    def rls() -> dict[str, str]:
        raise RLSContextError("a statement ran without the setting app.tenant_secret", missing=["app.tenant"])

    @app.get("/notes/{doc_id}")
    def read_doc(doc_id: int, response: Response) -> dict[str, Any]:
        doc = Doc[doc_id]
        set_etag(response, doc)
        return {"title": doc.title, "version": doc.version}

    @app.put("/notes/{doc_id}")
    def update_doc(doc_id: int, body: DocIn, request: Request, response: Response) -> dict[str, Any]:
        doc = Doc[doc_id]
        conditional = check_if_match(request, doc)
        doc.title = body.title
        set_etag(response, doc)
        return {"title": doc.title, "version": doc.version, "conditional": conditional}

    @app.put("/notes/{doc_id}/expect/{version}")
    def update_expecting(doc_id: int, version: int, body: DocIn) -> dict[str, Any]:
        doc = Doc[doc_id]
        doc.expect_version(version)
        doc.title = body.title
        return {"title": doc.title}

    return {"app": app, "Doc": Doc, "threads": threads}


def _client(app: FastAPI) -> TestClient:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TestClient(app, raise_server_exceptions=False)


def test_each_of_60_concurrent_requests_sees_its_own_principal(web: dict[str, Any]) -> None:
    # 60 requests on 4 session threads: every thread serves many of them in turn. A third of them send no
    # X-User: they must see nobody, not the principal of the request the thread served before.
    names = [None if i % 3 == 0 else f"red-user-{i}" for i in range(60)]
    rng = random.Random(7)

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=web["app"])
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:

            async def one(name: str | None, path: str) -> httpx.Response:
                headers = {} if name is None else {"X-User": name}
                return await client.get(path, headers=headers)

            calls = [one(n, f"/whoami?pause={rng.uniform(0, 0.02):.3f}") for n in names]
            calls += [one(n, "/whoami-async") for n in names]
            return await asyncio.gather(*calls)

    answers = asyncio.run(burst())
    assert [a.status_code for a in answers] == [200] * 120
    assert [a.json()["who"] for a in answers[:60]] == names
    assert [(a.json()["who"], a.json()["inner"]) for a in answers[60:]] == [(n, n) for n in names]
    assert 1 < len(web["threads"]) <= 4  # the session threads were reused across requests
    # Nothing stays behind: not in the session threads (between requests), not in this thread.
    barrier = threading.Barrier(4)

    def left_behind() -> Any:
        barrier.wait(timeout=10)  # one check on each of the 4 session threads
        return current_principal()

    checks = [session_executor().submit(left_behind) for _ in range(4)]
    assert [c.result(timeout=20) for c in checks] == [None] * 4
    assert current_principal() is None


def test_scoped_sees_the_request_principal_and_nobody_is_refused(web: dict[str, Any]) -> None:
    client = _client(web["app"])
    assert client.get("/notes", headers={"X-User": "red-ann"}).json() == ["r1"]
    assert client.get("/notes", headers={"X-User": "blue-bob"}).json() == ["b1"]
    nobody = client.get("/notes")
    assert nobody.status_code == 403
    assert nobody.headers["content-type"] == "application/problem+json"
    assert nobody.json()["code"] == "PermissionDenied"


def test_permission_denied_is_403_and_never_names_the_principal(web: dict[str, Any]) -> None:
    client = _client(web["app"])
    denied = client.get("/admin", headers={"X-User": SECRET_ID, "X-Perms": "docs.read"})
    assert denied.status_code == 403
    body = denied.json()
    assert body["title"] == "Forbidden" and "'docs.admin'" in body["detail"]
    assert SECRET_ID not in denied.text
    allowed = client.get("/admin", headers={"X-User": SECRET_ID, "X-Perms": "docs.admin"})
    assert allowed.json() == {"result": "ok"}


def test_a_principal_function_that_raises_fails_the_request(db: Database) -> None:
    def strict(request: Request) -> User:
        raise pk.PermissionDenied("the token of user-secret-9 has expired")

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    app = FastAPI()
    app.router.route_class = PonyRoute
    install(app, db=db, principal=strict)

    @app.get("/x")
    def x() -> dict[str, bool]:
        return {"ran": True}

    answer = _client(app).get("/x")
    assert answer.status_code == 403 and "user-secret-9" not in answer.text


def test_rls_context_error_stays_a_500_without_the_settings(web: dict[str, Any]) -> None:
    answer = _client(web["app"]).get("/rls", headers={"X-User": "red-ann"})
    assert answer.status_code == 500
    assert "tenant" not in answer.text


def test_etag_and_if_match(web: dict[str, Any]) -> None:
    client = _client(web["app"])
    read = client.get("/notes/1")
    etag = read.headers["etag"]
    assert etag == '"Doc:1:1"'

    # The tag read: the write goes through and answers the new version's tag.
    ok = client.put("/notes/1", json={"title": "r2"}, headers={"If-Match": etag})
    assert ok.status_code == 200 and ok.json() == {"title": "r2", "version": 2, "conditional": True}
    assert ok.headers["etag"] == '"Doc:1:2"'

    # The same (now stale) tag again: 412, and nothing written.
    stale = client.put("/notes/1", json={"title": "lost"}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert stale.json()["title"] == "Precondition Failed" and stale.json()["code"] == "VersionConflict"
    assert "Doc:1" not in stale.text  # the key is not repeated
    with db_session:
        assert web["Doc"][1].title == "r2"

    # A list of tags with the current one, and "*": accepted. No header: an unconditional write.
    assert (
        client.put(
            "/notes/1", json={"title": "r3"}, headers={"If-Match": f'"Doc:9:1", {ok.headers["etag"]}'}
        ).status_code
        == 200
    )
    assert client.put("/notes/1", json={"title": "r4"}, headers={"If-Match": "*"}).status_code == 200
    free = client.put("/notes/1", json={"title": "r5"})
    assert free.status_code == 200 and free.json()["conditional"] is False


def test_version_conflict_without_if_match_is_409(web: dict[str, Any]) -> None:
    client = _client(web["app"])
    assert client.put("/notes/2/expect/1", json={"title": "b2"}).status_code == 200
    conflict = client.put("/notes/2/expect/1", json={"title": "b3"})
    assert conflict.status_code == 409
    assert conflict.json()["title"] == "Conflict" and conflict.json()["code"] == "VersionConflict"
    # The same failure under a conditional header is the precondition the client asked for: 412.
    conditional = client.put("/notes/2/expect/1", json={"title": "b3"}, headers={"If-Unmodified-Since": "x"})
    assert conditional.status_code == 412


def test_etag_helpers_refuse_an_entity_that_is_not_versioned(db: Database) -> None:
    class Plain(db.Entity):
        name = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        obj = Plain(name="x")
        with pytest.raises(pk.errors.OptionError, match="Versioned"):
            set_etag(Response(), obj)
