"""What attach() changes in plain Pony (issue #12 item 6): plain attributes must not change at all.

The oracle is the same model on a Database without ``attach()``. On PostgreSQL the session time zone is
Europe/Paris (set in the URL), since with UTC an aware value is stored alike either way.
"""

from __future__ import annotations

import datetime as dt
import enum
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
    if backend.name == "postgres":
        with db_session:  # the case where PostgreSQL stores an aware value differently from naive UTC
            assert kit_db.select("SELECT current_setting('TimeZone')") == ["Europe/Paris"]
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


# ---------------------------------------------------------------------------------------------------------
# str/int-mixin Enums: plain Pony's mapping unless the attribute says as_enum=True


class Color(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


def declare_item(db: Database, *, attach: bool, table: str, as_enum: bool = False) -> Any:
    options: dict[str, Any] = {"as_enum": True} if as_enum else {}

    class Item(db.Entity):  # type: ignore[name-defined,misc]
        _table_ = table
        id = PrimaryKey(int)
        color = Optional(Color, **options)
        level = Optional(Level, **options)

    if attach:
        pk.attach(db)
    db.generate_mapping(create_tables=True)
    return Item


def enum_fixture(backend: Backend, as_enum: bool) -> Any:
    made = [bound(backend) for _ in range(2)]
    yield (
        declare_item(made[0], attach=False, table="plain_item"),
        declare_item(made[1], attach=True, table="kit_item", as_enum=as_enum),
    )
    for database in made:
        database.drop_all_tables(with_all_data=True)
        database.disconnect()


@pytest.fixture
def enum_twins(backend: Backend) -> Any:
    """``(plain Pony, attached)``: the same Item model; attached without as_enum."""
    yield from enum_fixture(backend, as_enum=False)


@pytest.fixture
def enum_members(backend: Backend) -> Any:
    """``(plain Pony, attached)``: the same Item model; attached with as_enum=True."""
    yield from enum_fixture(backend, as_enum=True)


def outcome(fn: Any) -> Any:
    try:
        with db_session:
            return ("ok", fn())
    except (TypeError, ValueError) as exc:
        return (type(exc).__name__,)


def behaviour(item: Any, colors: list[Any], levels: list[Any]) -> list[Any]:
    """What writing, storing, reading and querying these values does (types included)."""
    db = item._database_
    with db_session:
        item.select().delete(bulk=True)
    seen: list[Any] = []
    for i, (color, level) in enumerate(zip(colors, levels, strict=True)):
        seen.append(outcome(lambda i=i, c=color, v=level: item(id=i, color=c, level=v) and None))
    table = pk._pony.quote_name(db, item._table_)
    sql = f"SELECT id, color, level FROM {table} ORDER BY id"
    seen.append(outcome(lambda: [tuple(r) for r in db.select(sql)]))
    seen.append(outcome(lambda: [(repr(x.color), repr(x.level)) for x in item.select().order_by(item.id)]))
    seen.append(outcome(lambda: sorted(select(x.id for x in item if x.color == Color.RED))))
    return seen


values_of = {
    "color": st.sampled_from(list(Color)) | st.sampled_from(["red", "blue"]) | st.text(max_size=5),
    "level": st.sampled_from(list(Level)) | st.integers(-3, 9),
}


@settings(max_examples=15)
@given(data=st.data())
def test_mixin_enum_default_is_plain_pony(enum_twins: Any, data: Any) -> None:
    """Without as_enum, a str/int-mixin Enum attribute writes, stores, reads back (types included),
    accepts non-members and queries exactly as plain Pony does."""
    plain, kit = enum_twins
    size = data.draw(st.integers(1, 3))
    colors = data.draw(st.lists(values_of["color"], min_size=size, max_size=size))
    levels = data.draw(st.lists(values_of["level"], min_size=size, max_size=size))
    assert behaviour(kit, colors, levels) == behaviour(plain, colors, levels)


def test_mixin_enum_as_enum_reads_members(enum_members: Any) -> None:
    """With as_enum=True the column holds what plain Pony stores, values read back as members, and
    values that are not members are refused on assignment and on load (with a message naming them)."""
    plain, members = enum_members
    for model in (plain, members):
        with db_session:
            model(id=1, color=Color.RED, level=Level.HIGH)
            model(id=2, color="blue", level=1)
    with db_session:
        raw = [
            sorted(tuple(r) for r in m._database_.select(f"SELECT id, color, level FROM {m._table_}"))
            for m in (plain, members)
        ]
    assert raw[0] == raw[1] == [(1, "red", 2), (2, "blue", 1)]
    with db_session:
        assert [(x.color, x.level) for x in members.select().order_by(members.id)] == [
            (Color.RED, Level.HIGH),
            (Color.BLUE, Level.LOW),
        ]
        assert type(members[2].color) is Color and type(members[2].level) is Level
        assert select(x.id for x in members if x.level == Level.HIGH)[:] == [1]
    with db_session, pytest.raises(ValueError, match=r"'green' is not a valid Color value"):
        members(id=3, color="green")
    with db_session:
        plain(id=3, color="green", level=7)  # plain Pony accepts them
    with db_session:
        members._database_.execute(f"UPDATE {members._table_} SET level = 7 WHERE id = 2")
    with db_session, pytest.raises(ValueError, match=r"Item\.level .*holds 7.*not a Level value"):
        members[2].level  # noqa: B018


def test_as_enum_option_checks(db: Database) -> None:
    """as_enum takes True or False; False makes no sense for an Enum plain Pony cannot store."""

    class Plan(enum.Enum):
        FREE = "free"

    class Bad(db.Entity):  # type: ignore[name-defined,misc]
        plan = Optional(Plan, as_enum=False)

    pk.attach(db)
    with pytest.raises(pk.ConfigurationError, match=r"Bad\.plan: as_enum=False needs a str or int Enum"):
        db.generate_mapping(create_tables=True)
