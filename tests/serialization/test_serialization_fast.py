"""to_json(query): the fast path gives the entity path's bytes; every output validates against json_schema."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pony.orm import Database, db_session, delete, desc, select
from serialization_models import Color, define

import ponykit as pk
from ponykit import _pony

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)


def book_values(backend: str) -> st.SearchStrategy[dict[str, Any]]:
    """Generated values for every column of Book that this backend stores exactly."""
    micro = st.integers(0, 999999) if backend != "mysql" else st.just(0)
    return st.fixed_dictionaries(
        {
            "title": TEXT.filter(lambda s: bool(s.strip())),  # Pony strips strings
            "price": st.integers(-(10**8) + 1, 10**8 - 1).map(lambda c: Decimal(c) / 100),
            "rating": st.none() | st.floats(-1e6, 1e6, allow_nan=False).map(lambda f: round(f, 3)),
            "pages": st.none() | st.integers(1, 100000),
            "in_print": st.booleans(),
            "published": st.none() | st.dates(dt.date(1970, 1, 1), dt.date(2100, 1, 1)),
            "created": st.none()
            | st.builds(
                lambda d, us: d.replace(microsecond=us),
                st.datetimes(dt.datetime(1971, 1, 1), dt.datetime(2100, 1, 1)),
                micro,
            ),
            "duration": st.none()
            | st.integers(-800 * 3600, 800 * 3600).map(lambda s: dt.timedelta(seconds=s)),
            "code": st.none() | st.uuids(),
            "cover": st.none() | st.binary(max_size=20),
            "meta": st.dictionaries(
                st.text("abc", min_size=1, max_size=3), st.integers(-5, 5) | st.booleans(), max_size=3
            ),
            "color": st.none() | st.sampled_from(Color),
            "with_editor": st.booleans(),
        }
    )


def _insert(m: Any, rows: list[dict[str, Any]]) -> None:
    with db_session:
        delete(b for b in m.Book)
        author = m.Author.get(name="A") or m.Author(name="A", bio="b")
        for row in rows:
            values = dict(row)
            editor = author if values.pop("with_editor") else None
            m.Book(author=author, editor=editor, **values)


@pytest.fixture
def m(db: Database) -> Any:
    """The shared models on a fresh database."""
    return define(db)


def test_fast_path_is_used_and_avoids_objects(m: Any) -> None:
    """A flat request runs one SELECT and builds no entity objects; the output equals the entity path."""
    _insert(m, [{"title": "x", "price": Decimal("1.5"), "with_editor": True}])
    with db_session:
        query = select(b for b in m.Book)
        fast = pk.to_json(query, fast=True)
        assert _pony.session_cache(m.db) is not None
        assert not any(isinstance(o, m.Book) for o in _session_objects(m))
        assert fast == pk.to_json(query, fast=False)
        assert orjson.loads(fast)[0]["price"] == "1.50"


def _session_objects(m: Any) -> list[Any]:
    cache = _pony.session_cache(m.db)
    return list(cache.objects) if cache is not None else []


def test_fast_path_refuses_what_needs_objects(m: Any) -> None:
    """Collections, nesting and queries of non-entities go through the entity path; fast=True says why."""
    _insert(m, [{"title": "x", "price": Decimal(1), "with_editor": False}])
    with db_session:
        authors = select(a for a in m.Author)
        with pytest.raises(ValueError, match="fast path cannot serve"):
            pk.to_json(authors, with_collections=True, fast=True)
        assert orjson.loads(pk.to_json(authors, with_collections=True))[0]["books"] == [1]
        with pytest.raises(ValueError, match="selects entity instances"):
            pk.to_json(select(b.title for b in m.Book), fast=True)


def test_fast_path_keeps_filters_order_limit_and_lazy(m: Any) -> None:
    """Filters, ordering, limit/offset and lazy columns requested by name come out as in the entity path."""
    rows = [{"title": f"t{i}", "price": Decimal(i), "pages": i + 1, "with_editor": False} for i in range(10)]
    _insert(m, rows)
    with db_session:
        lo = 3
        query = select(b for b in m.Book if b.pages >= lo).order_by(desc(m.Book.id))
        for q in (query, query.limit(3, offset=2)):
            assert pk.to_json(q, only=["id", "pages"]) == pk.to_json(q, only=["id", "pages"], fast=False)
        titles = [r["title"] for r in orjson.loads(pk.to_json(query.limit(2)))]
        assert titles == ["t9", "t8"]
        authors = select(a for a in m.Author)
        assert pk.to_json(authors, with_lazy=True, fast=True) == pk.to_json(
            authors, with_lazy=True, fast=False
        )
        assert orjson.loads(pk.to_json(authors, with_lazy=True))[0]["bio"] == "b"


def test_fast_path_sees_unflushed_changes(m: Any) -> None:
    """Pending changes in the session are flushed before the SELECT, as before any Pony query."""
    _insert(m, [{"title": "old", "price": Decimal(1), "with_editor": False}])
    with db_session:
        m.Book[1].title = "new"
        assert orjson.loads(pk.to_json(select(b for b in m.Book), fast=True))[0]["title"] == "new"


@settings(max_examples=15)
@given(data=st.data())
def test_fast_and_entity_paths_byte_identical(m: Any, backend: Any, data: st.DataObject) -> None:
    """Over generated rows of every type both paths give the same bytes, valid per json_schema."""
    rows = data.draw(st.lists(book_values(backend.name), max_size=6))
    _insert(m, rows)
    schema = pk.json_schema(m.Book, many=True)
    with db_session:
        query = select(b for b in m.Book)
        fast = pk.to_json(query, fast=True)
    with db_session:
        slow = pk.to_json(select(b for b in m.Book), fast=False)
    assert fast == slow
    jsonschema.Draft202012Validator(schema).validate(orjson.loads(fast))


@settings(max_examples=10)
@given(data=st.data())
def test_nested_output_validates_against_schema(m: Any, backend: Any, data: st.DataObject) -> None:
    """Nested and collection output (related=, depth=, with_collections) validates against json_schema."""
    rows = data.draw(st.lists(book_values(backend.name), max_size=4))
    _insert(m, rows)
    variants: list[dict[str, Any]] = [
        {"with_collections": True},
        {"related": {"books": {"related": ["author", "editor"]}}},
        {"depth": 2, "with_lazy": True},
        {"only": ["name", "email"], "related": ["edited"]},
    ]
    with db_session:
        for options in variants:
            schema = pk.json_schema(m.Author, many=True, **options)
            out = orjson.loads(pk.to_json(select(a for a in m.Author), **options))
            jsonschema.Draft202012Validator(schema).validate(out)
        book_schema = pk.json_schema(m.Book, depth=1)
        for book in m.Book.select():
            jsonschema.Draft202012Validator(book_schema).validate(orjson.loads(book.to_json(depth=1)))


def test_schema_shape(m: Any) -> None:
    """json_schema is draft 2020-12, lists every key as required and closes the object."""
    schema = pk.json_schema(m.Book, only=["id", "price", "editor", "color"])
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["id", "price", "editor", "color"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["editor"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert schema["properties"]["color"]["anyOf"][0]["enum"] == ["red", "blue"]
    shelf = pk.json_schema(m.Slot)["properties"]["shelf"]
    assert shelf["type"] == "array"
    assert len(shelf["prefixItems"]) == 2
