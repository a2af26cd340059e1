"""from_dict / update_from: validation through Pony's rules, every problem listed, no mass assignment."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pony.orm import Database, commit, db_session, delete
from serialization_models import define
from test_serialization_fast import book_values

import ponykit as pk
from ponykit.errors import FieldError


@pytest.fixture
def m(db: Database) -> Any:
    """The shared models with one author."""
    ns = define(db)
    with db_session:
        ns.Author(name="Ann", email="ann@example.com")
    return ns


def _errors(exc: pytest.ExceptionInfo[pk.ValidationError]) -> dict[str, str]:
    return {e.path: e.message for e in exc.value.errors}


def test_creates_a_valid_entity(m: Any) -> None:
    """A valid payload becomes a saved entity with Pony-converted values; relations by key."""
    with db_session:
        book = m.Book.from_dict(
            {
                "title": "T",
                "price": "9.99",
                "published": "2020-02-03",
                "code": None,
                "author": 1,
                "color": "red",
            }
        )
        commit()
        assert book.to_dict(only=["title", "price", "published", "author", "color"]) == {
            "title": "T",
            "price": "9.99",
            "published": "2020-02-03",
            "author": 1,
            "color": "red",
        }


def test_every_problem_is_listed(m: Any) -> None:
    """Unknown keys, wrong types, out-of-range values, too-long strings, bad keys and missing required
    attributes are all reported in one ValidationError, by field path."""
    payload = {
        "title": "x" * 101,
        "price": "ten",
        "pages": -1,
        "in_print": "yes",
        "published": "2020-13-01",
        "code": "not-a-uuid",
        "cover": "%%%",
        "color": "green",
        "editor": 42,
        "bogus": 1,
    }
    with db_session, pytest.raises(pk.ValidationError) as exc:
        m.Book.from_dict(payload)
    errors = _errors(exc)
    assert set(errors) == {*payload, "author"}
    assert "too long" in errors["title"]
    assert errors["price"] == "expected a decimal number as a string, got string 'ten'"
    assert "less than the minimum" in errors["pages"] or "minimum" in errors["pages"]
    assert errors["in_print"] == "expected a boolean, got string 'yes'"
    assert "'red', 'blue'" in errors["color"]
    assert errors["editor"] == "no Author with primary key 42 exists"
    assert errors["bogus"] == "unknown attribute: Book has no attribute 'bogus'"
    assert errors["author"] == "missing required attribute"
    assert "invalid input for Book" in str(exc.value)
    with db_session:
        assert m.Book.select().count() == 0


def test_collection_paths_and_shapes(m: Any) -> None:
    """Collections take arrays of keys; a bad element is reported with its index in the path."""
    with db_session:
        m.Tag(name="a")
        with pytest.raises(pk.ValidationError) as exc:
            m.Author.from_dict({"name": "B", "tags": ["a", "zz", 3]})
        assert exc.value.errors == [
            FieldError("tags.1", "no Tag with primary key 'zz' exists"),
            FieldError("tags.2", "invalid key of Tag: expected a string, got integer 3"),
        ]
        author = m.Author.from_dict({"name": "B", "tags": ["a"]})
        commit()
        assert author.to_dict(only=["tags"]) == {"tags": ["a"]}
        with pytest.raises(pk.ValidationError, match="expected an array"):
            m.Author.from_dict({"name": "C", "tags": "a"})


def test_composite_and_object_references(m: Any) -> None:
    """Composite keys are lists; an object holding the key fields (nested to_dict output) also works."""
    with db_session:
        m.Shelf(room="A", number=1)
        slot = m.Slot.from_dict({"shelf": ["A", 1]})
        other = m.Slot.from_dict({"shelf": {"room": "A", "number": 1, "slots": []}})
        commit()
        assert slot.shelf is other.shelf
        with pytest.raises(pk.ValidationError) as exc:
            m.Slot.from_dict({"shelf": "A"})
        assert _errors(exc) == {"shelf": "expected a list of 2 key values of Shelf, got string 'A'"}


def test_primary_key_hidden_and_sensitive_refused_unless_allowed(m: Any) -> None:
    """Setting the pk, a hidden or a sensitive attribute from input is refused unless named in allow=."""
    payload = {"id": 77, "name": "Eve", "email": "eve@example.com", "secret_note": "s"}
    with db_session:
        with pytest.raises(pk.ValidationError) as exc:
            m.Author.from_dict(payload)
        errors = _errors(exc)
        assert errors["id"] == (
            "'id' is the primary key of Author and cannot be set from input; pass allow=['id'] to permit it"
        )
        assert "sensitive attribute" in errors["email"]
        assert "hidden attribute" in errors["secret_note"]
        author = m.Author.from_dict(payload, allow=["id", "email", "secret_note"])
        commit()
        assert author.id == 77
        assert author.email == "eve@example.com"


def test_sensitive_values_never_in_messages(m: Any) -> None:
    """Errors about a sensitive attribute never quote the value."""
    with db_session, pytest.raises(pk.ValidationError) as exc:
        m.Author.from_dict({"name": "X", "email": "s3cr3t-value" * 20}, allow=["email"])
    assert "s3cr3t" not in str(exc.value)
    assert exc.value.errors[0].path == "email"


def test_update_from_validates_everything_first(m: Any) -> None:
    """update_from sets nothing when any key is invalid, and sets every key otherwise."""
    with db_session:
        author = m.Author[1]
        with pytest.raises(pk.ValidationError) as exc:
            author.update_from({"name": "New", "id": 5, "bio": 3})
        assert set(_errors(exc)) == {"id", "bio"}
        assert author.name == "Ann"
        author.update_from({"name": "New", "bio": "text"})
        assert (author.name, author.bio) == ("New", "text")
        with pytest.raises(pk.ValidationError, match="is required"):
            author.update_from({"name": ""})
        with pytest.raises(pk.ValidationError, match="expected an object"):
            author.update_from([1, 2])


@settings(max_examples=12)
@given(data=st.data())
def test_round_trip_to_dict_from_dict(m: Any, backend: Any, data: st.DataObject) -> None:
    """to_dict -> from_dict gives an equal entity (same serialized form apart from the new key)."""
    values = data.draw(book_values(backend.name))
    values.pop("with_editor")
    with db_session:
        delete(b for b in m.Book)
        original = m.Book(author=m.Author[1], **values)
    with db_session:
        first = m.Book[original.id].to_dict()
        payload = {k: v for k, v in first.items() if k != "id"}
        copy = m.Book.from_dict(payload)
    with db_session:
        second = m.Book[copy.id].to_dict()
    assert {**second, "id": None} == {**first, "id": None}
    assert isinstance(Decimal(first["price"]), Decimal)
