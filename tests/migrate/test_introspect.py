"""introspect(): a database Pony created from a rich model reads back as the model's physical schema."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from _oracle_models import connect, create_and_introspect, expected_schema
from pony.orm import (
    Database,
    Discriminator,
    FloatArray,
    IntArray,
    Json,
    LongStr,
    Optional,
    PrimaryKey,
    Required,
    Set,
    StrArray,
    composite_index,
    composite_key,
)

from conftest import Backend
from ponykit.migrate._compare import compare
from ponykit.migrate._introspect import introspect


def declare_rich(db: Database, dialect: str) -> None:
    """Every scalar type Pony supports on ``dialect`` and every relation shape the migrations must see."""
    true = "1" if dialect in ("sqlite", "mysql") else "TRUE"

    class Person(db.Entity):  # type: ignore[name-defined]
        name = Required(str, 80, index=True)
        email = Optional(str, unique=True, nullable=True)
        bio = Optional(LongStr)
        age = Optional(int, size=8)
        small = Optional(int, size=16)
        medium = Optional(int, size=24)
        big = Optional(int, size=64)
        uns = Optional(int, unsigned=True)
        tiny_uns = Optional(int, size=8, unsigned=True)
        score = Optional(float)
        price = Optional(Decimal, 10, 2)
        default_dec = Optional(Decimal)
        born = Optional(date)
        at = Optional(datetime)
        at3 = Optional(datetime, precision=3)
        t = Optional(time)
        dur = Optional(timedelta)
        flag = Required(bool, sql_default=true)
        maybe = Optional(bool)
        level = Required(int, sql_default="0")
        ratio = Required(Decimal, 6, 3, sql_default="1.5")
        nick = Required(str, 20, sql_default="'anon'")
        uid = Optional(UUID)
        data = Optional(bytes)
        doc = Optional(Json)
        boss = Optional("Person", reverse="reports")
        reports = Set("Person", reverse="boss")
        pets = Set("Pet")
        clubs = Set("Club")
        tags = Set("Tag", table="person_tag_link", column="tag_ref")
        composite_key(name, age)
        composite_index(age, small)

    if dialect != "mysql":

        class Arr(db.Entity):  # type: ignore[name-defined]
            ints = Optional(IntArray)
            strs = Optional(StrArray)
            floats = Optional(FloatArray)

    class Pet(db.Entity):  # type: ignore[name-defined]
        kind = Discriminator(str)
        name = Required(str)
        owner = Optional(Person)
        _discriminator_ = "pet"

    class Dog(Pet):  # type: ignore[name-defined]
        _discriminator_ = "dog"
        barks = Optional(bool)

    class Cat(Pet):  # type: ignore[name-defined]
        lives = Required(int, default=9)

    class Club(db.Entity):  # type: ignore[name-defined]
        region = Required(str, 10)
        code = Required(int)
        PrimaryKey(region, code)
        members = Set(Person)
        events = Set("Event")

    class Event(db.Entity):  # type: ignore[name-defined]
        club = Required(Club)
        title = Required(str)
        composite_key(club, title)

    class Tag(db.Entity):  # type: ignore[name-defined]
        label = PrimaryKey(str, 40)
        people = Set(Person, column="person_ref")


def _rich(backend: Backend) -> tuple[Any, Any]:
    return expected_schema(declare_rich, backend.name), create_and_introspect(
        declare_rich, backend.url, backend.name
    )


def test_rich_model_reads_back_exactly(backend: Backend) -> None:
    expected, actual = _rich(backend)
    assert [str(d) for d in compare(expected, actual)] == []
    assert set(actual.tables) == set(expected.tables)


def test_spelled_as_pony_writes_it(backend: Backend) -> None:
    expected, actual = _rich(backend)
    person = "Person" if backend.name == "sqlite" else "person"
    for name, table in expected.tables.items():
        live = actual.tables[name]
        assert {c.name: c.sql_type for c in live.columns} == {c.name: c.sql_type for c in table.columns}, name
        assert {c.name: (c.not_null, c.auto, c.primary, c.unique) for c in live.columns} == {
            c.name: (c.not_null, c.auto, c.primary, c.unique) for c in table.columns
        }, name
        assert live.link == table.link, name
        named = {i.name for i in table.indexes if i.name is not None}
        assert named <= {i.name for i in live.indexes}, name
    assert actual.tables[person].column("price").sql_type == "DECIMAL(10, 2)"
    assert actual.tables[person].column("id").auto


def test_excluded_tables_and_empty_database(backend: Backend) -> None:
    connection = connect(backend.url)
    try:
        assert dict(introspect(connection, backend.name).tables) == {}
        cursor = connection.cursor()
        cursor.execute("CREATE TABLE ponykit_migration (revision VARCHAR(40) PRIMARY KEY)")
        cursor.execute("CREATE TABLE other (x INTEGER)")
        connection.commit()
        assert set(introspect(connection, backend.name).tables) == {"other"}
        assert set(introspect(connection, backend.name, exclude=()).tables) == {"other", "ponykit_migration"}
    finally:
        connection.close()
