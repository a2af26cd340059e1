"""Wrong serialization options raise SerializationOptionError (a PonykitError that also is the builtin
raised before: AttributeError for unknown names, TypeError for wrong types) on every API, naming the
entity and the option."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pony.orm import Database, db_session, select
from serialization_models import define

import ponykit as pk
from ponykit.serialization import json_schema, to_dict, to_json


@pytest.fixture
def m(db: Database) -> Any:
    """The shared models with one author and one book."""
    ns = define(db)
    with db_session:
        author = ns.Author(name="Ann", email="ann@example.com")
        ns.Book(title="T", price="1.50", author=author)
    return ns


# The four ways in: the mixin's methods, to_dict(), to_json() of an object and of a query, json_schema().
APIS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "method.to_dict": lambda m, o: m.Book[1].to_dict(**o),
    "method.to_json": lambda m, o: m.Book[1].to_json(**o),
    "to_dict": lambda m, o: to_dict(m.Book[1], **o),
    "to_dict(query)": lambda m, o: to_dict(select(b for b in m.Book), **o),
    "to_json(query)": lambda m, o: to_json(select(b for b in m.Book), **o),
    "json_schema": lambda m, o: json_schema(m.Book, **o),
}

# option -> (builtin raised before, words the message must hold besides the entity)
CASES: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"only": ["nope"]}, AttributeError, "only= names 'nope'"),
    ({"exclude": ["nope"]}, AttributeError, "exclude= names 'nope'"),
    ({"related": {"nope": {}}}, AttributeError, "related= names 'nope'"),
    ({"related": ["author.nope"]}, AttributeError, "related= names 'nope'"),
    ({"related": {"author": {"onyl": ["x"]}}}, TypeError, "unknown options ['onyl']"),
    ({"only": [1]}, TypeError, "only= expects attribute names"),
    ({"depth": -1}, TypeError, "depth= expects a non-negative integer"),
    ({"depth": "1"}, TypeError, "depth= expects a non-negative integer"),
    ({"related": {"title": {}}}, ValueError, "'title', a column of Book, not a relation"),
    ({"related": 5}, TypeError, "related= expects a mapping"),
    ({"exclude": ["author"], "related": ["author"]}, ValueError, "named both in exclude= and related="),
]


@pytest.mark.parametrize("api", sorted(APIS))
@pytest.mark.parametrize(("options", "builtin", "words"), CASES, ids=[repr(c[0]) for c in CASES])
def test_bad_options_raise_a_ponykit_error(
    m: Any, api: str, options: dict[str, Any], builtin: type[Exception], words: str
) -> None:
    """Each wrong option is a SerializationOptionError (ConfigurationError, and the old builtin too)."""
    with db_session, pytest.raises(pk.SerializationOptionError) as exc:
        APIS[api](m, options)
    assert isinstance(exc.value, pk.ConfigurationError)
    assert isinstance(exc.value, pk.PonykitError)
    assert isinstance(exc.value, builtin)
    assert "Book" in str(exc.value)
    assert words in str(exc.value)


def test_nested_errors_name_the_path(m: Any) -> None:
    """An error inside related= says which nested plan it is about."""
    with db_session, pytest.raises(pk.SerializationOptionError) as exc:
        m.Book[1].to_dict(related={"author": {"only": ["ghost"]}})
    assert "serialization options for Book.author (Author): only= names 'ghost'" in str(exc.value)


def test_relations_in_related_still_work(m: Any) -> None:
    """The stricter checks leave valid nesting alone."""
    with db_session:
        assert m.Book[1].to_dict(only=["title"], related={"author": {"only": ["name"]}}) == {
            "title": "T",
            "author": {"name": "Ann"},
        }
