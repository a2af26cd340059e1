"""What attach() changes in plain Pony (issue #12 item 6): plain attributes must not change at all.

The oracle is the same model on a Database without ``attach()``. On PostgreSQL the session time zone is
Europe/Paris (set in the URL), since with UTC an aware value is stored alike either way.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pony.orm import (
    Database,
    MultipleObjectsFoundError,
    Optional,
    PrimaryKey,
    Required,
    between,
    db_session,
    select,
)

import ponykit as pk
from conftest import Backend

UTC = dt.timezone.utc
offsets = st.builds(lambda m: dt.timezone(dt.timedelta(minutes=m)), st.integers(-14 * 60, 14 * 60))
naive_values = st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2099, 1, 1))
aware_values = st.datetimes(
    min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2099, 1, 1), timezones=offsets | st.just(UTC)
)


def paris_url(backend: Backend) -> str:
    """The backend's URL; on PostgreSQL with the session TimeZone set to Europe/Paris as well."""
    if backend.name != "postgres":
        return backend.url
    parts = urlsplit(backend.url)
    query = dict(parse_qsl(parts.query))
    query["options"] = (query.get("options", "") + " -c TimeZone=Europe/Paris").strip()
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def bound(backend: Backend) -> Database:
    db = Database()
    pk.bind_url(db, paris_url(backend))
    return db


def declare_event(db: Database, *, attach: bool, table: str = "ev") -> Any:
    class Event(db.Entity):  # type: ignore[name-defined,misc]
        _table_ = table
        id = PrimaryKey(int)
        ts = Optional(dt.datetime)

    if attach:
        pk.attach(db)
    db.generate_mapping(create_tables=True)
    return Event


@pytest.fixture
def twins(backend: Backend) -> Any:
    """``(plain, attached)``: the same model on a plain Pony Database and on an attached one."""
    plain_db, kit_db = bound(backend), bound(backend)
    plain = declare_event(plain_db, attach=False, table="plain_ev")
    kit = declare_event(kit_db, attach=True, table="kit_ev")
    yield plain, kit
    for database in (plain_db, kit_db):
        database.drop_all_tables(with_all_data=True)
        database.disconnect()


def observe(entity: Any, values: list[dt.datetime]) -> list[Any]:
    """What a backend stores and finds for ``values`` written through ``entity`` (raw column, ORM read,
    generator query with the value as parameter, ``get()``)."""
    db = entity._database_
    with db_session:
        entity.select().delete(bulk=True)
    with db_session:
        for i, value in enumerate(values):
            entity(id=i, ts=value)
    seen: list[Any] = []
    with db_session:
        table = pk._pony.quote_name(db, entity._table_)
        seen.append(db.select(f"SELECT ts FROM {table} ORDER BY id"))
        seen.append([e.ts for e in entity.select().order_by(entity.id)])
        for value in values:
            found = sorted(select(e.id for e in entity if e.ts == value))
            try:
                got = entity.get(ts=value)
            except MultipleObjectsFoundError:  # MariaDB: get() rounds the value to the column's precision
                seen.append((found, "several"))
            else:
                seen.append((found, got.id if got is not None else None))
    return seen


@settings(max_examples=15)
@given(values=st.lists(naive_values | aware_values, min_size=1, max_size=4))
def test_plain_datetime_attribute_behaves_as_plain_pony(twins: Any, values: list[dt.datetime]) -> None:
    """An aware or naive value in a plain ``datetime`` attribute is stored, read and found exactly as
    plain Pony does (it used to be stored as naive UTC on an attached Database)."""
    plain, kit = twins
    assert observe(kit, values) == observe(plain, values)


def test_rows_written_before_attach_are_still_found(backend: Backend) -> None:
    """Rows Pony wrote before the application adopted ponykit are found by the same aware value."""
    moment = dt.datetime(2024, 5, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    before = bound(backend)
    old = declare_event(before, attach=False)
    with db_session:
        old(id=1, ts=moment)
    before.disconnect()
    after = bound(backend)
    new = declare_event(after, attach=True)
    try:
        with db_session:
            assert select(e.id for e in new if e.ts == moment)[:] == [1]
            assert new.get(ts=moment) is not None
            new(id=2, ts=moment)
        with db_session:
            rows = after.select("SELECT ts FROM ev ORDER BY id")
            assert rows[0] == rows[1]  # written alike before and after attach()
    finally:
        after.drop_all_tables(with_all_data=True)
        after.disconnect()


def test_aware_datetime_attribute_queries_convert_by_column(backend: Backend) -> None:
    """An AwareDatetime attribute stores naive UTC, and an aware parameter compared with it (==, <, in,
    between) is converted too, while the same parameter compared with a plain column in the same query
    is bound as Pony binds it."""
    db = bound(backend)

    class Meeting(db.Entity):  # type: ignore[name-defined,misc]
        id = PrimaryKey(int)
        at = Required(pk.types.AwareDatetime)
        local = Optional(dt.datetime)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    paris = dt.timezone(dt.timedelta(hours=2))
    moment = dt.datetime(2024, 5, 1, 14, 0, tzinfo=paris)
    later = dt.datetime(2024, 5, 1, 13, 0, tzinfo=UTC)
    try:
        with db_session:
            Meeting(id=1, at=moment, local=moment)
            Meeting(id=2, at=later)
        with db_session:
            stored = db.select("SELECT at FROM meeting ORDER BY id")
            assert [str(v)[:19] for v in stored] == ["2024-05-01 12:00:00", "2024-05-01 13:00:00"]
            assert select(m.id for m in Meeting if m.at == moment)[:] == [1]
            assert select(m.id for m in Meeting if m.at != moment)[:] == [2]
            assert select(m.id for m in Meeting if moment < m.at)[:] == [2]
            assert sorted(select(m.id for m in Meeting if m.at >= moment)) == [1, 2]
            assert select(m.id for m in Meeting if m.at in (moment, moment))[:] == [1]
            assert select(m.id for m in Meeting if between(m.at, moment, moment))[:] == [1]
            assert select(m.id for m in Meeting if m.at == moment and m.local == moment)[:] == [1]
            assert Meeting.get(at=moment).id == 1
            assert Meeting[1].at == moment and Meeting[1].at.tzinfo == UTC
    finally:
        db.drop_all_tables(with_all_data=True)
        db.disconnect()
