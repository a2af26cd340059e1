"""PonyRoute and install() through FastAPI's TestClient: session per request, rollback, errors, timing."""

from __future__ import annotations

import contextvars
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from pony.orm import Database, Optional, Required, Set, db_session, flush, select

import ponykit as pk
from ponykit.diagnostics import count_queries
from ponykit.errors import ConfigurationError, FieldError, InvalidCursor, ValidationError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient warns about its httpx dependency
    from fastapi import APIRouter, FastAPI, HTTPException, Request
    from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict

from ponykit.integrations.fastapi import (
    PROBLEM_JSON,
    PonyRoute,
    ProblemType,
    async_ok,
    install,
)


class Teapot(Exception):
    pass


class AuthorOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str


class BookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    title: str
    author: AuthorOut  # a relation: loaded lazily, so only inside the session


class BookIn(BaseModel):
    title: str
    author: int


@pytest.fixture
def shop(db: Database) -> Iterator[dict[str, Any]]:
    class Author(db.Entity):
        name = Required(str)
        books = Set("Book")

    class Book(db.Entity):
        title = Required(str)
        author = Required(Author)
        note = Optional(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        Author(name="Ann")
    events: list[str] = []
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

    app = FastAPI()
    app.router.route_class = PonyRoute
    install(app, db=db, server_timing=True, problems=[ProblemType(Teapot, 418, "Teapot")])

    @app.middleware("http")
    async def tag(request: Request, call_next: Any) -> Any:
        token = request_id.set(request.headers.get("x-request-id", "-"))
        try:
            return await call_next(request)
        finally:
            request_id.reset(token)

    @app.post("/books", status_code=201)
    def create(body: BookIn, fail: str = "") -> BookOut:
        book = Book(title=body.title, author=Author[body.author])
        pk.on_commit(lambda: events.append(f"commit {body.title}"))
        pk.on_rollback(lambda: events.append(f"rollback {body.title}"))
        if fail == "http":
            raise HTTPException(status_code=409, detail="taken")
        if fail == "validation":
            raise ValidationError("bad book", [FieldError("title", "too short")])
        if fail == "teapot":
            raise Teapot()
        if fail == "cursor":
            raise InvalidCursor("the cursor is not valid for this list")
        return book  # BookOut built from the object, author loaded lazily, inside the session

    @app.get("/books/{book_id}")
    def read(book_id: int) -> BookOut:
        return Book[book_id]

    @app.get("/context")
    def context() -> dict[str, str]:
        return {"request_id": request_id.get()}

    return {"app": app, "db": db, "Author": Author, "Book": Book, "events": events}


def _client(app: FastAPI) -> TestClient:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TestClient(app)


def _titles(shop: dict[str, Any]) -> list[str]:
    with db_session:
        return sorted(select(b.title for b in shop["Book"]).without_distinct())


def test_a_sync_endpoint_commits_and_builds_the_response_inside_the_session(shop: dict[str, Any]) -> None:
    client = _client(shop["app"])
    answer = client.post("/books", json={"title": "Dune", "author": 1})
    assert answer.status_code == 201
    assert answer.json() == {"id": 1, "title": "Dune", "author": {"id": 1, "name": "Ann"}}
    assert _titles(shop) == ["Dune"]
    assert shop["events"] == ["commit Dune"]
    assert client.get("/books/1").json()["author"]["name"] == "Ann"


@pytest.mark.parametrize(
    ("fail", "status"), [("http", 409), ("validation", 422), ("teapot", 418), ("cursor", 400)]
)
def test_any_exception_rolls_the_request_back(shop: dict[str, Any], fail: str, status: int) -> None:
    client = _client(shop["app"])
    answer = client.post(f"/books?fail={fail}", json={"title": "Dune", "author": 1})
    assert answer.status_code == status
    assert _titles(shop) == []
    assert shop["events"] == ["rollback Dune"]


def test_validation_error_is_a_422_problem_with_every_field_error(shop: dict[str, Any]) -> None:
    answer = _client(shop["app"]).post("/books?fail=validation", json={"title": "Dune", "author": 1})
    assert answer.headers["content-type"].startswith(PROBLEM_JSON)
    problem = answer.json()
    assert problem["status"] == 422
    assert problem["instance"] == "/books"
    errors = problem["errors"]
    assert [set(e) >= {"loc", "type", "msg"} for e in errors] == [True]
    assert errors[0]["loc"] == ["title"]
    # The same keys as FastAPI's own 422 detail items.
    own = _client(shop["app"]).post("/books", json={"title": 5}).json()["detail"]
    assert all({"loc", "type", "msg"} <= set(item) for item in own)


def test_object_not_found_is_a_404_without_the_key(shop: dict[str, Any]) -> None:
    answer = _client(shop["app"]).get("/books/424242")
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith(PROBLEM_JSON)
    assert "424242" not in answer.json()["detail"]  # (the instance is the path the client asked for)
    assert "Book" in answer.json()["detail"]


def test_optimistic_check_error_is_a_409(db: Database) -> None:
    class Counter(db.Entity):
        _table_ = "pk_counter"
        value = Required(int)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        Counter(value=1)
    app = FastAPI()
    app.router.route_class = PonyRoute
    install(app, db=db)

    @app.post("/bump")
    def bump() -> dict[str, int]:
        counter = Counter[1]
        counter.value  # noqa: B018  # read it, so Pony checks it at the UPDATE
        _concurrent_bump(db)
        counter.value = counter.value + 1
        return {"value": counter.value}

    answer = _client(app).post("/bump")
    assert answer.status_code == 409
    assert answer.json()["title"] == "Conflict"
    with db_session:
        assert Counter[1].value == 100  # the concurrent write stays; the request's was rolled back


def _concurrent_bump(db: Database) -> None:
    # Another transaction changes the row between this request's read and its write.
    import threading

    def other() -> None:
        with db_session:
            db.execute("update pk_counter set value = 100 where id = 1")

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()


def test_context_variables_reach_the_endpoint_thread(shop: dict[str, Any]) -> None:
    answer = _client(shop["app"]).get("/context", headers={"x-request-id": "r-17"})
    assert answer.json() == {"request_id": "r-17"}


def test_server_timing_counts_the_requests_statements(shop: dict[str, Any]) -> None:
    client = _client(shop["app"])
    client.post("/books", json={"title": "Dune", "author": 1})
    with count_queries(shop["db"]) as counter:
        answer = client.get("/books/1")
    header = answer.headers["server-timing"]
    assert f'desc="{counter.count} statements"' in header
    assert counter.count >= 2  # the book, then its author (lazily, while building the response)
    assert header.startswith("db;dur=")


def test_async_endpoints_are_refused_unless_marked(shop: dict[str, Any]) -> None:
    app = shop["app"]
    with pytest.raises(ConfigurationError, match=r"async def.*run_in_session"):

        @app.get("/async")
        async def unmarked() -> dict[str, str]:
            return {}

    with pytest.raises(ConfigurationError, match="generator"):

        @app.get("/stream")
        def stream() -> Iterator[int]:
            yield 1

    Book = shop["Book"]

    def count_books() -> int:
        return Book.select().count()

    @app.get("/async-ok")
    @async_ok
    async def marked() -> dict[str, int]:
        return {"books": await pk.run_in_session(count_books)}

    assert _client(app).get("/async-ok").json() == {"books": 0}


def test_a_router_with_route_class_and_an_app_without_install(db: Database) -> None:
    class Thing(db.Entity):
        name = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    router = APIRouter(route_class=PonyRoute)

    @router.post("/things")
    def make() -> dict[str, int]:
        thing = Thing(name="x")
        flush()
        return {"id": thing.id}

    installed = FastAPI()
    installed.include_router(router, prefix="/v1")
    install(installed)
    assert _client(installed).post("/v1/things").status_code == 200
    with db_session:
        assert Thing.select().count() == 1

    bare = FastAPI()
    bare.include_router(router)
    with pytest.raises(ConfigurationError, match=r"install\(app"):
        _client(bare).post("/things")


def test_sql_on_the_event_loop_is_logged_once_naming_the_endpoint(
    shop: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    app, Book = shop["app"], shop["Book"]

    @app.get("/blocking")
    @async_ok
    async def blocking() -> dict[str, int]:
        with db_session:  # Pony's documented pattern: the query blocks the event loop
            return {"books": Book.select().count()}

    client = _client(app)
    with caplog.at_level("WARNING", logger="ponykit.integrations"):
        for _ in range(3):
            assert client.get("/blocking").json() == {"books": 0}
        client.get("/books/1")  # a sync endpoint's SQL runs on its session thread: no warning
    warnings_ = [r.getMessage() for r in caplog.records if r.name == "ponykit.integrations"]
    assert len(warnings_) == 1
    assert "GET /blocking" in warnings_[0]
    assert "run_in_session" in warnings_[0]
