"""ponykit._pony.model: the frozen AttrInfo view of Pony attributes, tested on every backend."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest
from pony.orm import Database, Discriminator, Optional, PrimaryKey, Required, Set, composite_key

import ponykit as pk
from ponykit import _pony


@pytest.fixture
def model(db: Database) -> dict[str, Any]:
    """Every kind of attribute AttrInfo describes: keys, relations both ways, options, inheritance."""

    class Author(db.Entity):
        id = PrimaryKey(int, auto=True)
        email = Required(str, 120, unique=True)
        nick = Optional(str, nullable=True)
        bio = Optional(str, lazy=True)
        score = Required(int, default=0, py_check=lambda v: v >= 0)
        stamp = Optional(int, sql_default="0", volatile=True)
        note = Optional(str, hidden=True)
        price = Optional(Decimal, precision=10, scale=2)
        books = Set("Book")

    class Book(db.Entity):
        kind = Discriminator(str)
        shelf = Required(str)
        number = Required(int)
        author = Required(Author)
        tags = Set("Tag")
        PrimaryKey(shelf, number)

    class Novel(Book):
        genre = Optional(str)

    class Tag(db.Entity):
        first = Required(str)
        second = Required(str)
        books = Set(Book)
        composite_key(first, second)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return {"Author": Author, "Book": Book, "Novel": Novel, "Tag": Tag}


def test_value_attributes(model: dict[str, Any]) -> None:
    Author = model["Author"]
    id_, email, nick, bio = (_pony.attr_info(a) for a in (Author.id, Author.email, Author.nick, Author.bio))
    assert (id_.name, id_.entity, id_.py_type, id_.kind) == ("id", Author, int, "value")
    assert id_.pk and id_.auto and id_.pk_offset == 0 and id_.columns == ("id",) and id_.column == "id"
    assert not email.pk and email.unique and email.required and not email.nullable
    assert email.args == (120,) and email.label == "Author.email"
    assert nick.nullable and not nick.required and not nick.unique
    assert bio.lazy and not email.lazy
    score = _pony.attr_info(Author.score)
    assert score.default == 0 and score.py_check is not None and score.py_check(1)
    stamp = _pony.attr_info(Author.stamp)
    assert stamp.sql_default == "0" and stamp.volatile and not score.volatile
    assert _pony.attr_info(Author.note).hidden and not nick.hidden
    price = _pony.attr_info(Author.price)
    assert price.converter is price.converters[0] and price.converter.attr is Author.price
    assert not id_.is_relation and not id_.is_collection and id_.reverse is None and id_.reverse_attr is None


def test_relations_and_their_reverse(model: dict[str, Any]) -> None:
    Author, Book, Tag = model["Author"], model["Book"], model["Tag"]
    author = _pony.attr_info(Book.author)
    assert author.kind == "one" and author.is_relation and not author.is_collection
    assert author.py_type is Author and author.columns == ("author",)
    assert author.reverse_attr is Author.books
    books = author.reverse
    assert books is not None and books.kind == "many" and books.is_collection and books.columns == ()
    assert books.reverse is not None and books.reverse.attr is Book.author
    tags = _pony.attr_info(Book.tags)
    assert tags.kind == "many" and tags.py_type is Tag
    assert tags.reverse is not None and tags.reverse.kind == "many" and tags.reverse.attr is Tag.books


def test_composite_keys_discriminator_and_inheritance(model: dict[str, Any]) -> None:
    Book, Novel = model["Book"], model["Novel"]
    shelf, number = _pony.attr_info(Book.shelf), _pony.attr_info(Book.number)
    # As Pony's is_pk: ``pk`` marks a one-attribute PrimaryKey; parts of a composite key have pk_offset.
    assert not shelf.pk and not number.pk and (shelf.pk_offset, number.pk_offset) == (0, 1)
    kind = _pony.attr_info(Book.kind)
    assert kind.discriminator and not shelf.discriminator
    names = [info.name for info in _pony.attr_infos(Novel)]
    assert names[: len(Book._attrs_)] == [a.name for a in Book._attrs_] and "genre" in names
    genre = _pony.attr_info(Novel.genre)
    assert genre.entity is Novel and genre.label == "Novel.genre"
    assert _pony.attr_info(Novel.shelf).entity is Book  # inherited: the declaring entity


def test_views_are_frozen_and_cached_once_mapped(model: dict[str, Any]) -> None:
    Author = model["Author"]
    info = _pony.attr_info(Author.email)
    assert _pony.attr_info(Author.email) is info
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.name = "other"  # type: ignore[misc]
    assert "Author.email" in repr(info)


def test_views_before_mapping(db: Database) -> None:
    """Before generate_mapping the view is taken on demand (not cached): no columns, no converters yet."""

    class Draft(db.Entity):
        title = Required(str)

    info = _pony.attr_info(Draft.title)
    assert info.name == "title" and info.entity is Draft and info.columns == () and info.converters == ()
    assert _pony.attr_label(Draft.title) == "Draft.title"
    assert _pony.attr_info(Draft.title) is not info


def test_a_view_taken_during_mapping_is_not_kept(db: Database) -> None:
    """Pony sets ``db.schema`` before it makes columns and converters: a view asked for in between (by a
    converter's ``init``) must not be cached, or the mapped attribute would look column-less forever."""

    class Draft(db.Entity):
        title = Required(str)

    db.schema = object()  # where generate_mapping stands while it builds the converters
    try:
        early = _pony.attr_info(Draft.title)
    finally:
        db.schema = None
    assert early.columns == ()
    db.generate_mapping(create_tables=True)
    info = _pony.attr_info(Draft.title)
    assert info.columns == ("title",) and info.converter is not None
    assert _pony.attr_info(Draft.title) is info  # cached from now on


def test_door_helpers(model: dict[str, Any]) -> None:
    Author, Book = model["Author"], model["Book"]
    assert _pony.is_attribute(Author.email) and not _pony.is_attribute("email")
    assert not _pony.is_attribute(_pony.attr_info(Author.email))
    assert _pony.attr_type(Book.author) is Author
    assert _pony.table_key(("main", "Author")) == "author" and _pony.table_key("Book") == "book"
    assert _pony.table_key(_pony.entity_info(Book).table) in _pony.table_entities(Book._database_)
