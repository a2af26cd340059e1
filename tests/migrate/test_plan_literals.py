"""Backfill literals: every type Pony stores, written into DDL text, reads back through Pony as the value
given; text of any content is quoted, never concatenated raw."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from _plan_harness import connect, create, migrate, release
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pony.orm import Database, FloatArray, IntArray, Json, Optional, Required, StrArray, db_session

from conftest import Backend
from ponykit.migrate._hints import Hints
from ponykit.migrate._literals import literal

VALUES: dict[str, tuple[Any, Any]] = {
    "s": (str, "it's a \\ back'slash \"quote\" ünï"),
    "i": (int, -(2**31)),
    "f": (float, 2.5),
    "d": (Decimal, Decimal("1234.56")),
    "b": (bool, True),
    "day": (dt.date, dt.date(2020, 2, 29)),
    "at": (dt.datetime, dt.datetime(2021, 3, 4, 5, 6, 7)),
    "tm": (dt.time, dt.time(23, 59, 58)),
    "span": (dt.timedelta, dt.timedelta(days=1, seconds=5)),
    "u": (UUID, UUID("12345678-1234-5678-1234-567812345678")),
    "raw": (bytes, b"\x00\x01'\\\xff"),
    "doc": (Json, {"k": ["v", 1, None], "q": "it's"}),
}


def before(db: Database) -> None:
    class Item(db.Entity):
        name = Required(str, 20)


def after(db: Database) -> None:
    namespace: dict[str, Any] = {"name": Required(str, 20)}
    for attr, (py_type, _value) in VALUES.items():
        namespace[attr] = Optional(py_type) if py_type in (bool, Json, str) else Required(py_type)
    type("Item", (db.Entity,), namespace)


def test_every_type_backfills(backend: Backend) -> None:
    table = "Item" if backend.name == "sqlite" else "item"
    hints = Hints(backfills={(table, attr): value for attr, (_t, value) in VALUES.items()})

    def fill(db: Database) -> None:
        with db_session:
            db.Item(name="one")

    migration, counts = migrate(backend.name, backend.url, before, after, hints, fill)
    assert not any(counts)
    db = create(after, backend.url, create_tables=False)
    try:
        with db_session:
            item = db.Item.get(name="one")
            for attr, (_t, value) in VALUES.items():
                if attr == "tm" and backend.name == "sqlite":
                    value = value.isoformat()  # Pony 0.7.20 reads SQLite TIME back as the stored text
                assert getattr(item, attr) == value, f"{attr}: {getattr(item, attr)!r}\n{migration}"
    finally:
        release(db)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), Decimal("NaN"), "nul\x00", object()])
def test_unrenderable_values_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="backfill"):
        literal(bad, "postgres")


def test_aware_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        literal(dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc), "mysql")


_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(value=_TEXT)
def test_text_literals_round_trip(backend: Backend, value: str) -> None:
    con = connect(backend.name, backend.url)
    try:
        cur = con.cursor()
        cur.execute(f"SELECT {literal(value, backend.name)}")
        got = cur.fetchone()[0]
    finally:
        con.close()
    assert got == value


def arrays_after(db: Database) -> None:
    class Item(db.Entity):
        name = Required(str, 20)
        ints = Optional(IntArray)
        strs = Optional(StrArray)
        none = Optional(FloatArray)


@pytest.mark.backends("sqlite", "postgres")  # MariaDB has no arrays in Pony
def test_array_backfills(backend: Backend) -> None:
    table = "Item" if backend.name == "sqlite" else "item"
    values = {"ints": [1, -2], "strs": ["a", "it's"], "none": []}
    hints = Hints(backfills={(table, attr): value for attr, value in values.items()})

    def fill(db: Database) -> None:
        with db_session:
            db.Item(name="one")

    migration, counts = migrate(backend.name, backend.url, before, arrays_after, hints, fill)
    assert not any(counts)
    db = create(arrays_after, backend.url, create_tables=False)
    try:
        with db_session:
            item = db.Item.get(name="one")
            assert {attr: list(getattr(item, attr)) for attr in values} == values, str(migration)
    finally:
        release(db)
