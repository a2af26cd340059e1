"""strategies.entity (issue #23 item 4): drawn values construct and commit, on every backend."""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import Database, Json, Optional, PrimaryKey, Required, Set, commit, db_session

import ponykit as pk
from ponykit.errors import OptionError
from ponykit.testing import factory
from ponykit.testing import strategies as pks

KEY = pk.security.KeyRing.generate_key()


class Mood(enum.Enum):
    HAPPY = 1
    SAD = 2


@pytest.fixture
def model(db: Database) -> Database:
    class Author(db.Entity):  # type: ignore[name-defined,misc]
        code = PrimaryKey(str, 12)
        name = Required(str, 20, unique=True)
        books = Set("Book")

    class Book(db.Entity):  # type: ignore[name-defined,misc]
        author = Required(Author)
        title = Required(str, 40)
        pages = Required(int, min=1, max=5000)
        small = Required(int, size=8, unsigned=True)
        big = Required(int, size=64)
        price = Required(Decimal, 8, 2, min=0)
        rating = Optional(float, min=0, max=5)
        published = Required(dt.date)
        printed = Required(dt.datetime)
        at = Optional(dt.time)
        length = Optional(dt.timedelta)
        ref = Required(uuid.UUID, unique=True)
        cover = Optional(bytes)
        meta = Required(Json)
        mood = Required(Mood)
        updated = Required(pk.types.AwareDatetime)
        host = Optional(ipaddress.IPv6Address)
        net = Required(pk.types.IPNetwork)
        secret = Optional(pk.types.EncryptedStr)
        note = Optional(str, nullable=True)
        even = Required(int, py_check=lambda v: v % 2 == 0)

    pk.attach(db, keys=pk.security.KeyRing({"k1": KEY}))
    db.generate_mapping(create_tables=True)
    return db


def test_drawn_values_construct_and_commit(model: Database) -> None:
    Author, Book = model.Author, model.Book
    make_book = factory(Book)

    @given(author=pks.entity(Author), book=pks.entity(Book))
    def check(author: dict[str, Any], book: dict[str, Any]) -> None:
        with db_session:
            made = Author(**author)  # no reference: the values alone construct it
            commit()
            stored = make_book(**book, author=made)  # a factory fills what the values leave out
            commit()
            assert stored.title == book["title"] and stored.even % 2 == 0
            assert "author" not in book
            stored.delete()
            made.delete()

    check()


def test_related_and_overrides(model: Database) -> None:
    Author, Book = model.Author, model.Book
    with db_session:
        ann = factory(Author)()
        commit()

        @given(pks.entity(Book, related={"author": ann}, title=st.just("Fixed"), pages=7))
        def check(values: dict[str, Any]) -> None:
            assert values["author"] is ann and values["title"] == "Fixed" and values["pages"] == 7
            book = Book(**values)
            commit()
            book.delete()  # unique values may repeat in the next example
            commit()

        check()
    with pytest.raises(OptionError, match="Book has no attribute 'nope'"):
        pks.entity(Book, nope=1)
