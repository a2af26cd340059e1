"""Entities with every attribute type, shared by the serialization tests."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any

from pony.orm import Database, Json, LongStr, Optional, PrimaryKey, Required, Set

import ponykit as pk
from ponykit import _pony


class Color(enum.Enum):
    """A plain Enum, mapped through a small test converter (ponykit.types provides the real one)."""

    RED = "red"
    BLUE = "blue"


class ColorConverter(_pony.converter_base()):  # type: ignore[misc]
    """Stores a Color as its value in a VARCHAR column."""

    def init(self, kwargs: dict[str, Any]) -> None:
        pass

    def validate(self, val: Any, obj: Any = None) -> Any:
        return val if isinstance(val, Color) else Color(val)

    def py2sql(self, val: Any) -> Any:
        return val.value if isinstance(val, Color) else val

    def sql2py(self, val: Any) -> Any:
        return Color(val)

    def sql_type(self) -> str:
        return "VARCHAR(20)"


def define(db: Database) -> Any:
    """Declare Author, Book, Tag, Shelf and Slot on ``db``, attach ponykit and map; returns a namespace."""

    class Author(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        __sensitive__ = ("email",)
        name = Required(str, 50)
        email = Optional(str, 100)
        secret_note = Optional(str, hidden=True)
        bio = Optional(LongStr)
        books = Set("Book", reverse="author")
        edited = Set("Book", reverse="editor")
        tags = Set("Tag")

    class Book(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        title = Required(str, 100)
        price = Required(Decimal, 10, 2)
        rating = Optional(float)
        pages = Optional(int, min=1, max=100000)  # Pony ignores min=0 (falsy)
        in_print = Required(bool, default=True)
        published = Optional(dt.date)
        created = Optional(dt.datetime)
        alarm = Optional(dt.time)
        duration = Optional(dt.timedelta)
        code = Optional(uuid.UUID)
        cover = Optional(bytes)
        meta = Optional(Json)
        color = Optional(Color)
        author = Required(Author, reverse="books")
        editor = Optional(Author, reverse="edited")

    class Tag(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        name = PrimaryKey(str, 40)
        authors = Set(Author)

    class Shelf(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        room = Required(str, 20)
        number = Required(int)
        PrimaryKey(room, number)
        slots = Set("Slot")

    class Slot(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        shelf = Required(Shelf)
        label = Optional(str, 20)

    kit = pk.attach(db)
    kit.register_converter(Color, ColorConverter)
    db.generate_mapping(create_tables=True)

    class NS:
        pass

    ns: Any = NS()
    ns.db, ns.Author, ns.Book, ns.Tag, ns.Shelf, ns.Slot = db, Author, Book, Tag, Shelf, Slot
    return ns


FULL_BOOK: dict[str, Any] = {
    "title": "Pony ✓",
    "price": Decimal("12.5"),
    "rating": 4.25,
    "pages": 320,
    "in_print": False,
    "published": dt.date(2021, 3, 4),
    "created": dt.datetime(2021, 3, 4, 5, 6, 7, 890123),
    "alarm": dt.time(7, 30, 15),
    "duration": dt.timedelta(hours=1, seconds=5),
    "code": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "cover": b"\x00\xffpony",
    "meta": {"a": [1, 2], "b": None},
    "color": Color.BLUE,
}
