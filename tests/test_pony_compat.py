"""attach() keeps plain Pony's behaviour where Pony's own suite does not look (probes, every backend).

Pony's own test suite passes unchanged with ponykit attached (``tests/pony_suite/run.py``, see
docs/compatibility.md). These probes cover what that suite does not: aware datetimes written to a plain
``Required(datetime)`` attribute, and ``str``/``int``-mixin Enums declared as attribute types. Each
writes the same values through a plain Database and an attached one (own tables, same backend) and
compares what the database holds and what Pony reads back.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pony.orm import Database, Required, db_session

import ponykit as pk
import ponykit.kit
from conftest import Backend

AWARE = dt.datetime(2024, 5, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))


class Color(str, enum.Enum):
    """A str-mixin Enum: plain Pony maps it as a str attribute."""

    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    """An int-mixin Enum: plain Pony maps it as an int attribute."""

    LOW = 1
    HIGH = 2


@pytest.fixture
def make_pair_db(backend: Backend) -> Iterator[Callable[[str], Database]]:
    """Databases on this test's backend; PostgreSQL sessions use a non-UTC time zone.

    With the server's default UTC zone PostgreSQL would store an aware value as UTC in both modes and
    hide a difference; Europe/Paris makes plain Pony's local-time storage visible.
    """
    made: list[Database] = []

    def make(name: str) -> Database:
        url = backend.url
        if backend.name == "sqlite":
            url = url.replace("test.db", f"{name}.db")
        elif backend.name == "postgres":
            url = url.replace("options=-c%20", "options=-c%20TimeZone%3DEurope%2FParis%20-c%20", 1)
        database = Database()
        pk.bind_url(database, url)
        made.append(database)
        return database

    yield make
    for database in made:
        database.disconnect()
        ponykit.kit.forget(database)


def _events(
    make: Callable[[str], Database], attached: bool, name: str = "", create: bool = True
) -> tuple[Database, Any]:
    name = name or ("kit" if attached else "plain")
    db = make(name)

    class Event(db.Entity):
        _table_ = f"probe_event_{name}"
        ts = Required(dt.datetime)

    if attached:
        pk.attach(db)
    db.generate_mapping(create_tables=create)
    return db, Event


def _observe_datetime(make: Callable[[str], Database], attached: bool) -> dict[str, Any]:
    db, event = _events(make, attached)
    with db_session:
        event(ts=AWARE)
    with db_session:
        stored = db.select(f"SELECT ts FROM {event._table_}")
    with db_session:
        read = event[1].ts
    with db_session:
        found_by_get = event.get(ts=AWARE) is not None
        found_by_query = event.select(lambda e: e.ts == AWARE).count()
    return {"stored": list(stored), "read": read, "get": found_by_get, "query": found_by_query}


def test_aware_datetime_in_plain_datetime_attribute_is_stored_and_read_as_plain_pony(
    make_pair_db: Callable[[str], Database],
) -> None:
    """An aware value in a plain Required(datetime): stored, read and found exactly as plain Pony does."""
    plain = _observe_datetime(make_pair_db, attached=False)
    attached = _observe_datetime(make_pair_db, attached=True)
    assert attached == plain


def _lookups(event: Any) -> tuple[bool, int]:
    with db_session:
        return event.get(ts=AWARE) is not None, event.select(lambda e: e.ts == AWARE).count()


def test_rows_plain_pony_wrote_are_found_by_aware_value_once_attached(
    make_pair_db: Callable[[str], Database],
) -> None:
    """Adopting ponykit on an existing database: rows plain Pony wrote are still found by get() and queries.

    A plain Database writes an aware timestamp; a second Database, attached, maps the same table and
    looks the row up by the same aware value, as the application does after adding ponykit.
    """
    _plain_db, plain_event = _events(make_pair_db, attached=False, name="shared")
    with db_session:
        plain_event(ts=AWARE)
    assert _lookups(plain_event) == (True, 1)
    _kit_db, kit_event = _events(make_pair_db, attached=True, name="shared", create=False)
    assert _lookups(kit_event) == (True, 1)


def _items(make: Callable[[str], Database], attached: bool) -> tuple[Database, Any]:
    db = make("kit" if attached else "plain")

    class Item(db.Entity):
        _table_ = "probe_item_kit" if attached else "probe_item_plain"
        color = Required(Color)
        level = Required(Level)

    if attached:
        pk.attach(db)
    db.generate_mapping(create_tables=True)
    return db, Item


def _observe_enums(make: Callable[[str], Database], attached: bool) -> dict[str, Any]:
    db, item = _items(make, attached)
    with db_session:
        item(color=Color.RED, level=Level.HIGH)
        item(color=Color.GREEN, level=Level.LOW)
    with db_session:
        stored = db.select(f"SELECT color, level FROM {item._table_} ORDER BY id")
    with db_session:
        read = [(i.color, i.level) for i in item.select().order_by(item.id)]
    with db_session:
        # Queries plain Pony can run (it refuses an IntEnum attribute inside a generator query at all,
        # "Unsupported type 'Level'", so only get() reaches the int column).
        red = item.select(lambda i: i.color == Color.RED).count()
        red_text = item.select(lambda i: i.color == "red").count()
        by_get = item.get(color=Color.GREEN, level=Level.LOW) is not None
        by_raw_values = item.get(color="red", level=2) is not None
    return {
        "stored": [tuple(row) for row in stored],
        "read": read,
        "queries": (red, red_text, by_get, by_raw_values),
    }


def test_str_and_int_enums_are_stored_and_read_back_equal_to_plain_pony(
    make_pair_db: Callable[[str], Database],
) -> None:
    """Mixin Enums: the database holds the same values, reads are the same values of the same types
    (Pony's str and int: a mixin Enum gets members back only with ``as_enum=True``), queries find the same
    rows."""
    plain = _observe_enums(make_pair_db, attached=False)
    attached = _observe_enums(make_pair_db, attached=True)
    assert attached["stored"] == plain["stored"] == [("red", 2), ("green", 1)]
    assert attached["read"] == plain["read"]
    assert {v for row in attached["read"] for v in row} == {v for row in plain["read"] for v in row}
    assert attached["queries"] == plain["queries"] == (1, 1, True, True)
    assert [tuple(map(type, row)) for row in attached["read"]] == [(str, int), (str, int)]
    assert [tuple(map(type, row)) for row in plain["read"]] == [(str, int), (str, int)]
