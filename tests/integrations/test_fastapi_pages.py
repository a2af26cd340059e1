"""Page[T] and CursorPage[T]: envelopes over paginate/paginate_keyset, links, one snapshot under writers."""

from __future__ import annotations

import threading
import warnings
from typing import Any

import pytest
from pony.orm import Database, Required, db_session, select
from pydantic import BaseModel, ConfigDict

import ponykit as pk

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi import FastAPI, Request
    from fastapi.testclient import TestClient

from ponykit.integrations.fastapi import CursorPage, Page, PonyRoute, install


class RowOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    n: int


@pytest.fixture
def pages(db: Database) -> dict[str, Any]:
    class Row(db.Entity):
        _table_ = "page_row"
        n = Required(int)

    pk.attach(db, keys=None)
    db.generate_mapping(create_tables=True)
    with db_session:
        for i in range(7):
            Row(n=i)
    app = FastAPI()
    app.router.route_class = PonyRoute
    install(app, db=db)

    @app.get("/rows")
    def rows(request: Request, page: int = 1, per_page: int = 3) -> Page[RowOut]:
        return Page[RowOut].from_query(select(r for r in Row), page=page, per_page=per_page, request=request)

    @app.get("/cursor")
    def cursor(
        request: Request, after: str | None = None, before: str | None = None, per_page: int = 3
    ) -> CursorPage[RowOut]:
        return CursorPage[RowOut].from_query(
            select(r for r in Row),
            per_page=per_page,
            after=after,
            before=before,
            order="n",
            request=request,
            secret=b"0123456789abcdef0123",
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = TestClient(app)
    return {"db": db, "Row": Row, "client": client}


def test_page_envelope_and_links(pages: dict[str, Any]) -> None:
    body = pages["client"].get("/rows?page=2&per_page=3").json()
    assert [item["n"] for item in body["items"]] == [3, 4, 5]
    assert (body["total"], body["pages"], body["has_next"], body["has_prev"]) == (7, 3, True, True)
    links = body["links"]
    assert links["next"].endswith("page=3&per_page=3") or "page=3" in links["next"]
    assert "page=1" in links["prev"] and "page=3" in links["last"]
    last = pages["client"].get(links["last"]).json()
    assert [item["n"] for item in last["items"]] == [6]
    assert last["links"]["next"] is None


def test_bad_page_is_a_400(pages: dict[str, Any]) -> None:
    answer = pages["client"].get("/rows?page=0")
    assert answer.status_code == 400
    assert answer.json()["title"] == "Invalid page"


def test_cursor_pages_walk_every_row_once_and_back(pages: dict[str, Any]) -> None:
    client = pages["client"]
    seen: list[int] = []
    url = "/cursor"
    bodies = []
    while url:
        body = client.get(url).json()
        bodies.append(body)
        seen += [item["n"] for item in body["items"]]
        url = body["links"]["next"]
    assert seen == list(range(7))
    back = client.get(bodies[-1]["links"]["prev"]).json()
    assert [item["n"] for item in back["items"]] == [3, 4, 5]


def test_tampered_cursor_is_a_400(pages: dict[str, Any]) -> None:
    first = pages["client"].get("/cursor").json()
    cursor = first["next_cursor"]
    tampered = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    answer = pages["client"].get("/cursor", params={"after": tampered})
    assert answer.status_code == 400
    assert answer.json()["title"] == "Invalid cursor"


def test_page_outside_any_session_converts_items_inside_its_own(pages: dict[str, Any]) -> None:
    Row = pages["Row"]
    page = Page[RowOut].from_query(select(r for r in Row), page=1, per_page=2)
    assert [item.n for item in page.items] == [0, 1]
    assert page.total == 7


def test_count_and_items_come_from_one_snapshot_under_a_concurrent_writer(pages: dict[str, Any]) -> None:
    # The last page's size must be what `total` implies, while another thread keeps inserting rows.
    Row, client = pages["Row"], pages["client"]
    stop = threading.Event()

    def writer() -> None:
        n = 100
        while not stop.is_set():
            with db_session:
                Row(n=n)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(25):
            first = client.get("/rows?per_page=5").json()
            last = client.get("/rows", params={"page": first["pages"], "per_page": 5}).json()
            total, pages_count = last["total"], last["pages"]
            expected = total - (pages_count - 1) * 5 if last["page"] == pages_count else 5
            if last["page"] <= pages_count:
                assert len(last["items"]) == expected, last
    finally:
        stop.set()
        thread.join()
