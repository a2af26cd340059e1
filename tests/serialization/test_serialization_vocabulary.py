"""One vocabulary for serialization: the functions and the Serializable methods take the same parameters
(``query_or_objects``, the options, ``json_schema``'s ``many``), and to_dict/to_json share one path."""

from __future__ import annotations

import inspect
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pony.orm import Database, db_session, select
from serialization_models import FULL_BOOK, define

from ponykit import serialization
from ponykit.errors import SerializationOptionError


@pytest.fixture
def m(db: Database) -> Any:
    """The shared models with one author, a full book and an empty book."""
    ns = define(db)
    with db_session:
        author = ns.Author(name="Ann", email="ann@example.com", secret_note="n", bio="long text")
        ns.Book(author=author, **FULL_BOOK)
        ns.Book(author=author, title="Bare", price=Decimal(0))
    return ns


def _parameters(fn: Any, skip: int) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in list(inspect.signature(fn).parameters.values())[skip:]]


def test_query_or_objects_is_the_one_name() -> None:
    """to_dict and to_json name their first parameter query_or_objects."""
    for fn in (serialization.to_dict, serialization.to_json):
        assert next(iter(inspect.signature(fn).parameters)) == "query_or_objects"


def test_json_schema_method_has_the_function_parameters(m: Any) -> None:
    """Entity.json_schema(...) takes json_schema(entity, ...)'s parameters, by the same names and kinds."""
    assert _parameters(m.Book.json_schema, 0) == _parameters(serialization.json_schema, 1)
    assert _parameters(m.Book.to_dict, 1) == _parameters(serialization.to_dict, 1)
    assert (
        _parameters(serialization.to_dict, 1) == _parameters(serialization.to_json, 1)[:-1]
    )  # to_json adds fast=
    cases: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((), {}),
        ((["id", "title"],), {}),
        ((None, ["cover"], True), {"many": True}),
        ((), {"related": {"author": {"only": ["name"]}}, "depth": None}),
        ((), {"include_sensitive": True, "many": True}),
    ]
    for args, kwargs in cases:
        assert m.Book.json_schema(*args, **kwargs) == serialization.json_schema(m.Book, *args, **kwargs)
    with pytest.raises(TypeError):
        m.Book.json_schema(unknown=1)
    with pytest.raises(SerializationOptionError):
        m.Book.json_schema(only=["nope"])


def test_to_dict_and_to_json_give_the_same_content(m: Any) -> None:
    """Through the methods (default and general paths) and the functions, by position and by keyword."""
    option_sets: list[dict[str, Any]] = [
        {},
        {"only": ["id", "title", "price"]},
        {"exclude": "cover, meta"},
        {"with_collections": True},
        {"related": {"author": {"only": ["name"]}}},
        {"depth": 1, "only": ["title", "author"]},
    ]
    with db_session:
        for book in m.Book.select().order_by(m.Book.id):
            for options in option_sets:
                as_dict = book.to_dict(**options)
                assert orjson.loads(book.to_json(**options)) == orjson.loads(orjson.dumps(as_dict))
                assert serialization.to_dict(book, **options) == as_dict
                assert serialization.to_dict(query_or_objects=book, **options) == as_dict
                assert orjson.loads(serialization.to_json(query_or_objects=book, **options)) == orjson.loads(
                    book.to_json(**options)
                )
        books = select(b for b in m.Book).order_by(m.Book.id)
        assert serialization.to_dict(query_or_objects=books) == [b.to_dict() for b in books]
        assert orjson.loads(serialization.to_json(query_or_objects=books)) == [
            orjson.loads(b.to_json()) for b in books
        ]


def test_one_general_path_for_both_methods(m: Any) -> None:
    """The generated methods fall back to one general path per method, both made by one factory."""
    general = serialization._GENERAL
    assert set(general) == {"to_dict", "to_json"}
    assert general["to_dict"].__code__ is general["to_json"].__code__  # one body
    with db_session:
        book = m.Book[1]
        assert general["to_dict"](book, ["title"]) == {"title": FULL_BOOK["title"]}
        assert general["to_json"](book, ["title"]) == orjson.dumps({"title": FULL_BOOK["title"]})
        assert book.to_json() == orjson.dumps(book.to_dict())  # generated method, default options
