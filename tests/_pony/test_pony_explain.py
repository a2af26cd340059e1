"""ponykit._pony.explain: the session's connection without the provider, the mapping read backwards."""

from __future__ import annotations

import pytest
from pony.orm import (
    Database,
    Discriminator,
    Optional,
    PrimaryKey,
    Required,
    Set,
    TransactionError,
    composite_index,
    db_session,
)

import ponykit as pk
from ponykit import _pony
from ponykit.diagnostics import count_queries


def test_table_infos_map_tables_and_columns_back_to_attributes(db: Database) -> None:
    class Animal(db.Entity):
        kind = Discriminator(str)
        name = Required(str, index=True)
        owner = Optional("Person")

    class Dog(Animal):
        bark = Optional(str)

    class Person(db.Entity):
        id = PrimaryKey(int, auto=True)
        first = Required(str)
        last = Required(str)
        pets = Set(Animal)
        composite_index(last, first)

    before = _pony.table_infos(db)  # not mapped yet: nothing to read, nothing cached
    assert all(not info.columns for info in before.values())
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    infos = _pony.table_infos(db)
    assert _pony.table_infos(db) is infos  # cached once mapped
    animal = infos["animal"]
    assert animal.entity == "Animal"
    assert animal.columns["name"] == "Animal.name"
    assert animal.columns["owner"] == "Animal.owner"
    assert animal.columns["bark"] == "Dog.bark"  # a subclass column, on the root's table
    assert ("name",) in animal.indexes
    person = infos["person"]
    assert ("last", "first") in person.indexes and ("id",) in person.indexes
    assert "pets" not in person.columns  # a collection has no column of its own


def test_session_connection_is_the_sessions_and_runs_nothing_through_pony(db: Database) -> None:
    class Thing(db.Entity):
        name = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with pytest.raises(TransactionError, match="db_session"):
        _pony.session_connection(db)
    with db_session, count_queries() as counter:
        Thing(name="a")  # pending: flushed first, as before one of Pony's queries
        connection = _pony.session_connection(db)
        assert connection is db.get_connection()
        cursor = connection.cursor()
        cursor.execute("SELECT count(*) FROM thing")
        assert cursor.fetchone()[0] == 1
    assert [s.sql.split()[0].upper() for s in counter.statements] == ["INSERT"]
