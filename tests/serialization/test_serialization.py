"""Serializable.to_dict / to_json: golden output for every attribute type, Pony's options, nesting."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pony.orm import Database, Required, commit, db_session, select
from serialization_models import FULL_BOOK, Color, define

import ponykit as pk
from ponykit.serialization import to_dict

GOLDEN_BOOK = {
    "id": 1,
    "title": "Pony ✓",
    "price": "12.50",
    "rating": 4.25,
    "pages": 320,
    "in_print": False,
    "published": "2021-03-04",
    "created": "2021-03-04T05:06:07.890123",
    "alarm": "07:30:15",
    "duration": 3605,
    "code": "12345678-1234-5678-1234-567812345678",
    "cover": "AP9wb255",
    "meta": {"a": [1, 2], "b": None},
    "color": "blue",
    "author": 1,
    "editor": None,
}

EMPTY_BOOK = {
    "id": 2,
    "title": "Bare",
    "price": "0.00",
    "rating": None,
    "pages": None,
    "in_print": True,
    "published": None,
    "created": None,
    "alarm": None,
    "duration": None,
    "code": None,
    "cover": None,
    "meta": {},  # Pony gives Optional(Json) an empty object by default
    "color": None,
    "author": 1,
    "editor": None,
}


@pytest.fixture
def m(db: Database) -> Any:
    """The shared models on a fresh database, with one author, a full book and an empty book."""
    ns = define(db)
    with db_session:
        author = ns.Author(name="Ann", email="ann@example.com", secret_note="n", bio="long text")
        ns.Book(author=author, **FULL_BOOK)
        ns.Book(author=author, title="Bare", price=Decimal(0))
    return ns


def golden(backend: Any) -> dict[str, Any]:
    """GOLDEN_BOOK as stored by this backend (Pony maps datetime to MySQL DATETIME, without microseconds)."""
    if backend.name == "mysql":
        return {**GOLDEN_BOOK, "created": "2021-03-04T05:06:07"}
    return GOLDEN_BOOK


def test_golden_output_every_type(m: Any, backend: Any) -> None:
    """Every attribute type serializes to its documented JSON form after a round trip through the database."""
    with db_session:
        assert m.Book[1].to_dict() == golden(backend)
        assert m.Book[2].to_dict() == EMPTY_BOOK
        assert orjson.loads(m.Book[1].to_json()) == golden(backend)


def test_golden_output_of_unsaved_objects(m: Any, backend: Any) -> None:
    """New objects serialize like loaded ones (the session is flushed first, as Pony does)."""
    with db_session:
        # Pony 0.7.20 reads SQLite time columns back as text and then reports the object as changed
        # behind its back if it is reloaded in the same session, so the time attribute stays unset here.
        values = {k: v for k, v in FULL_BOOK.items() if k != "alarm"}
        book = m.Book(author=m.Author[1], **values)
        assert book.to_dict() == {**golden(backend), "id": 3, "alarm": None}


def test_to_json_is_compact_orjson_bytes(m: Any) -> None:
    """to_json returns the bytes orjson gives for to_dict, keys in attribute order."""
    with db_session:
        book = m.Book[2]
        assert book.to_json(only=["id", "title", "price"]) == b'{"id":2,"title":"Bare","price":"0.00"}'


@pytest.mark.backends("sqlite", "postgres")  # MariaDB refuses to store infinities at all
def test_float_nan_and_infinity_become_null(m: Any) -> None:
    """Non-finite floats serialize as null (what orjson does), in to_dict as well."""
    with db_session:
        book = m.Book[2]
        book.rating = float("inf")
        assert book.to_dict(only=["rating"]) == {"rating": None}


def test_mixin_is_accepted_by_pony_and_overrides_pony_to_dict(db: Database) -> None:
    """Pony's metaclass accepts the mixin after db.Entity, and the mixin's to_dict replaces Pony's."""

    class Item(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        when = Required(dt.date)

    class Sub(Item):  # type: ignore[name-defined]
        pass

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        Item(when=dt.date(2020, 1, 2))
        commit()
        assert Item[1].to_dict() == {"id": 1, "when": "2020-01-02", "classtype": "Item"}
        sub = Sub(when=dt.date(2020, 1, 3))
        assert sub.to_dict()["when"] == "2020-01-03"
        assert isinstance(Item[1], pk.Serializable)


def test_user_override_of_to_dict_is_kept(db: Database) -> None:
    """An entity that defines its own to_dict keeps it; the mixin only replaces Pony's version."""

    class Item(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        name = Required(str)

        def to_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return {"custom": True}

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        assert Item(name="x").to_dict() == {"custom": True}


def test_pony_selection_semantics(m: Any) -> None:
    """only/exclude/with_collections/with_lazy mean what they mean in Pony's Entity.to_dict."""
    with db_session:
        m.Tag(name="b", authors=[m.Author[1]])
        m.Tag(name="a", authors=[m.Author[1]])
        author = m.Author[1]
        assert author.to_dict() == {"id": 1, "name": "Ann", "secret_note": "n"}
        assert author.to_dict(with_lazy=True)["bio"] == "long text"
        assert author.to_dict(with_collections=True, exclude="secret_note") == {
            "id": 1,
            "name": "Ann",
            "books": [1, 2],
            "edited": [],
            "tags": ["a", "b"],
        }
        # only overrides the flags and may name collections and lazy attributes
        expected = {"name": "Ann", "tags": ["a", "b"], "bio": "long text"}
        assert author.to_dict(only="name, tags, bio") == expected
        with pytest.raises(AttributeError, match="Entity Author does not have attribute nope"):
            author.to_dict(only=["nope"])


def test_matches_pony_to_dict_for_plain_types(m: Any) -> None:
    """For ints, strings and keys the mixin gives exactly Pony's own to_dict values."""
    from pony.orm.core import Entity

    with db_session:
        author = m.Author[1]
        ours = author.to_dict(with_collections=True, include_sensitive=True)
        pony = Entity.to_dict(author, with_collections=True)
        assert ours == pony


def test_composite_keys_are_lists(m: Any) -> None:
    """Composite primary keys of related objects serialize as lists, collections sorted."""
    with db_session:
        shelf = m.Shelf(room="A", number=2)
        m.Slot(shelf=shelf, label="x")
        m.Slot(shelf=m.Shelf(room="A", number=1), label="y")
        commit()
        assert m.Slot[1].to_dict() == {"id": 1, "shelf": ["A", 2], "label": "x"}
        assert shelf.to_dict(with_collections=True) == {"room": "A", "number": 2, "slots": [1]}
        assert orjson.loads(pk.to_json(select(s for s in m.Slot).order_by(m.Slot.id))) == [
            {"id": 1, "shelf": ["A", 2], "label": "x"},
            {"id": 2, "shelf": ["A", 1], "label": "y"},
        ]


def test_nested_related_per_path(m: Any) -> None:
    """related= nests relations with their own options, collections included, per path."""
    with db_session:
        m.Tag(name="t", authors=[m.Author[1]])
        out = m.Author[1].to_dict(
            only=["name"],
            related={
                "books": {"only": ["title", "color"]},
                "tags": {"related": {"authors": {"only": ["id"]}}},
            },
        )
        assert out == {
            "name": "Ann",
            "books": [{"title": "Pony ✓", "color": "blue"}, {"title": "Bare", "color": None}],
            "tags": [{"name": "t", "authors": [1]}],
        }
        dotted = m.Book[1].to_dict(only=["id"], related=["author.tags"])
        assert dotted["author"]["tags"] == [{"name": "t"}]


def test_cycles_become_keys(m: Any) -> None:
    """An object already on the path is serialized as its key, so nesting never loops."""
    with db_session:
        spec = {"books": {"only": ["id", "author"], "related": ["author"]}}
        out = m.Author[1].to_dict(only=["id"], related=spec)
        assert out == {"id": 1, "books": [{"id": 1, "author": 1}, {"id": 2, "author": 1}]}


def test_depth_nests_every_selected_relation(m: Any) -> None:
    """depth=N nests all selected relations N levels; depth=0 is the flat form."""
    with db_session:
        book = m.Book[2]
        assert book.to_dict(depth=0) == EMPTY_BOOK
        nested = book.to_dict(depth=1, only=["id", "author", "editor"])
        assert nested == {"id": 2, "author": {"id": 1, "name": "Ann", "secret_note": "n"}, "editor": None}


def test_sensitive_left_out_unless_asked(m: Any) -> None:
    """Sensitive attributes are omitted by default and included when named in only= or include_sensitive."""
    with db_session:
        author = m.Author[1]
        assert "email" not in author.to_dict()
        assert "email" not in author.to_json().decode()
        assert author.to_dict(only=["email"]) == {"email": "ann@example.com"}
        assert author.to_dict(include_sensitive=True)["email"] == "ann@example.com"
        nested = m.Book[1].to_dict(only=["id"], related={"author": {}})
        assert "email" not in nested["author"]


def test_module_level_to_dict_on_lists_and_plain_entities(db: Database) -> None:
    """ponykit.serialization.to_dict works on any entity (no mixin) and on iterables of objects."""

    class Plain(db.Entity):  # type: ignore[name-defined]
        price = Required(Decimal, 8, 3)
        color = Required(Color)

    from serialization_models import ColorConverter

    pk.attach(db).register_converter(Color, ColorConverter)
    db.generate_mapping(create_tables=True)
    with db_session:
        Plain(price=Decimal("1.5"), color=Color.RED)
        assert to_dict(Plain[1]) == {"id": 1, "price": "1.500", "color": "red"}
        assert to_dict(select(p for p in Plain)) == [{"id": 1, "price": "1.500", "color": "red"}]


def test_bad_options_are_reported(m: Any) -> None:
    """Unknown nested options, non-relations in related= and bad depth values raise clear errors."""
    with db_session:
        book = m.Book[1]
        with pytest.raises(TypeError, match="unknown options"):
            book.to_dict(related={"author": {"onyl": ["x"]}})
        with pytest.raises(TypeError, match="depth"):
            book.to_dict(depth=-1)
        with pytest.raises(ValueError, match="both in exclude= and related="):
            book.to_dict(exclude=["author"], related=["author"])
        with pytest.raises(AttributeError, match="does not have attribute ghost"):
            book.to_dict(related=["ghost"])
