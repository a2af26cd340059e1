"""paginate_keyset: cursors, tamper resistance, sort specifications and errors."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pony.orm import Database, Optional, Required, db_session, desc, select

import ponykit as pk
from ponykit.diagnostics import count_queries
from ponykit.errors import ConfigurationError, InvalidCursor, InvalidPage
from ponykit.query import paginate_keyset

SECRET = os.urandom(32)


class SecretStr(str):
    """A str type marked sensitive, as ponykit.security marks its types."""

    __ponykit_sensitive__ = True


@pytest.fixture
def item(db: Database) -> Any:
    class Item(db.Entity):
        group = Required(int)
        rank = Optional(int)
        name = Optional(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        for i in range(12):
            Item(group=i % 3, rank=None if i % 4 == 0 else i % 5, name=f"n{i:02d}")
    return Item


@pytest.fixture
def cursor(item: Any) -> str:
    with db_session:
        page = paginate_keyset(select(i for i in item).order_by(item.rank), 4, secret=SECRET)
    assert page.next_cursor is not None
    return page.next_cursor


def assert_rejected_without_sql(item: Any, bad: Any, query: Any = None, key: bytes = SECRET) -> None:
    """``bad`` as after= and before= raises InvalidCursor and runs no SQL."""
    with db_session:
        q = query if query is not None else select(i for i in item).order_by(item.rank)
        for name in ("after", "before"):
            with count_queries() as counter, pytest.raises(InvalidCursor):
                paginate_keyset(q, 4, secret=key, **{name: bad})
            assert counter.count == 0, counter.report()


def test_every_character_flip_is_rejected_without_sql(item: Any, cursor: str) -> None:
    """Changing any single character of a cursor raises InvalidCursor before any SQL runs."""
    for i, ch in enumerate(cursor):
        for replacement in {chr(ord(ch) ^ 1), "A" if ch != "A" else "B", "-" if ch != "-" else "_"}:
            assert_rejected_without_sql(item, cursor[:i] + replacement + cursor[i + 1 :])


def test_every_byte_flip_is_rejected_without_sql(item: Any, cursor: str) -> None:
    """Flipping any bit of any decoded byte (re-encoded canonically) raises InvalidCursor, no SQL."""
    import base64

    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    for i in range(len(raw)):
        for bit in (0, 7):
            flipped = bytearray(raw)
            flipped[i] ^= 1 << bit
            bad = base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode()
            assert_rejected_without_sql(item, bad)


def test_truncated_and_extended_cursors_are_rejected(item: Any, cursor: str) -> None:
    """Every proper prefix of a cursor, and a cursor with extra characters, raises InvalidCursor."""
    for n in range(len(cursor)):
        assert_rejected_without_sql(item, cursor[:n])
    assert_rejected_without_sql(item, cursor + "A")
    assert_rejected_without_sql(item, cursor + "AAAA")


def test_garbage_values_are_rejected(item: Any) -> None:
    """Non-strings, non-ASCII text and random base64 raise InvalidCursor."""
    for bad in (123, b"abc", "é" * 10, "!!!!", "AAAA" * 20, " " + "A" * 40):
        assert_rejected_without_sql(item, bad)


def test_cursor_of_another_query_or_order_is_rejected(item: Any, cursor: str) -> None:
    """A cursor issued for another filter, another sort order or another entity raises InvalidCursor."""
    with db_session:
        assert_rejected_without_sql(item, cursor, select(i for i in item if i.group == 1).order_by(item.rank))
        assert_rejected_without_sql(item, cursor, select(i for i in item).order_by(desc(item.rank)))
        assert_rejected_without_sql(item, cursor, select(i for i in item).order_by(item.name))


def test_cursor_of_another_key_is_rejected(item: Any, cursor: str) -> None:
    """A cursor signed with another key raises InvalidCursor."""
    assert_rejected_without_sql(item, cursor, key=os.urandom(32))


def test_cursor_is_url_safe_and_hides_nothing_sensitive(item: Any, cursor: str) -> None:
    """Cursors use only URL-safe base64 characters and the same position gives the same cursor."""
    import string

    assert set(cursor) <= set(string.ascii_letters + string.digits + "-_")
    with db_session:
        again = paginate_keyset(select(i for i in item).order_by(item.rank), 4, secret=SECRET)
    assert again.next_cursor == cursor


def test_sorting_by_sensitive_attribute_is_refused(db: Database) -> None:
    """A sort key with a sensitive attribute raises ConfigurationError naming it, before any SQL."""

    class Person(db.Entity):
        ssn = Required(SecretStr)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session, count_queries() as counter:
        with pytest.raises(ConfigurationError, match=r"Person.ssn.*sensitive"):
            paginate_keyset(select(p for p in Person), order="ssn", secret=SECRET)
        assert counter.count == 0


def test_missing_key_is_a_configuration_error(item: Any) -> None:
    """Without a key ring or secret=, paginate_keyset says how to provide a key."""
    with db_session, pytest.raises(ConfigurationError, match="secret="):
        paginate_keyset(select(i for i in item))


def test_key_ring_subkey_is_used(item: Any) -> None:
    """A Kit key ring's subkey('cursor') signs cursors; a cursor signed by it verifies through it."""

    class Ring:
        def subkey(self, purpose: str) -> bytes:
            assert purpose == "cursor"
            return b"k" * 32

    kit = pk.get_kit(item._database_)
    kit.keys = Ring()
    try:
        with db_session:
            first = paginate_keyset(select(i for i in item), 5)
            second = paginate_keyset(select(i for i in item), 5, after=first.next_cursor)
            assert second.items[0].id > first.items[-1].id
            with pytest.raises(InvalidCursor):
                paginate_keyset(select(i for i in item), 5, after=first.next_cursor, secret=SECRET)
    finally:
        kit.keys = None


def test_order_argument_forms_agree(item: Any) -> None:
    """order= as names, attributes and desc() gives the same pages as the query's own order_by."""
    with db_session:
        base = select(i for i in item)
        expected = [
            i.id for i in paginate_keyset(base.order_by(desc(item.group), item.name), 12, secret=SECRET)
        ]
        for order in (["-group", "name"], [desc(item.group), item.name]):
            assert [i.id for i in paginate_keyset(base, 12, order=order, secret=SECRET)] == expected


def test_bad_arguments(item: Any) -> None:
    """Bad per_page, both cursors, unreadable order and unknown names raise clear errors."""
    with db_session:
        q = select(i for i in item)
        with pytest.raises(InvalidPage):
            paginate_keyset(q, 0, secret=SECRET)
        with pytest.raises(InvalidPage):
            paginate_keyset(q, 5000, secret=SECRET)
        with pytest.raises(InvalidCursor, match="not both"):
            paginate_keyset(q, after="x", before="y", secret=SECRET)
        with pytest.raises(ConfigurationError, match="no attribute"):
            paginate_keyset(q, order="nope", secret=SECRET)
        with pytest.raises(ConfigurationError, match="order="):
            paginate_keyset(q.order_by(lambda i: i.group + 1), secret=SECRET)
        with pytest.raises(ConfigurationError, match="secret="):
            paginate_keyset(q, secret=b"short")
        with pytest.raises(ConfigurationError, match="entities"):
            paginate_keyset(select(i.name for i in item), secret=SECRET)


def test_filtered_query_pages(item: Any) -> None:
    """A filtered query pages over its own rows only, in order, with the pk breaking ties."""
    with db_session:
        q = select(i for i in item if i.group != 1).order_by(desc(item.group))
        expected = [i.id for i in q.order_by(None).order_by(desc(item.group), item.id)]
        seen, after = [], None
        while True:
            page = paginate_keyset(q, 3, after=after, secret=SECRET)
            seen += [i.id for i in page.items]
            if not page.has_next:
                break
            after = page.next_cursor
        assert seen == expected


@pytest.mark.backends("sqlite")
def test_cursor_values_of_other_types_round_trip(db: Database) -> None:
    """Sort values of datetime, date, Decimal, float, bytes, UUID and bool types survive the cursor."""
    import datetime as dt
    import uuid
    from decimal import Decimal

    class Thing(db.Entity):
        when = Required(dt.datetime)
        day = Required(dt.date)
        amount = Required(Decimal)
        ratio = Required(float)
        blob = Required(bytes)
        uid = Required(uuid.UUID)
        flag = Required(bool)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        for i in range(6):
            Thing(
                when=dt.datetime(2020, 1, 1 + i // 2),
                day=dt.date(2021, 1, 1 + i % 2),
                amount=Decimal(i % 3),
                ratio=i / 3,
                blob=bytes([i % 2]),
                uid=uuid.uuid4(),
                flag=i % 3 == 0,
            )
    for attr in ("when", "day", "amount", "ratio", "blob", "uid", "flag"):
        with db_session:
            q = select(t for t in Thing)
            expected = [t.id for t in q.order_by(getattr(Thing, attr), Thing.id)]
            seen, after = [], None
            while True:
                page = paginate_keyset(q, 2, after=after, order=attr, secret=SECRET)
                seen += [t.id for t in page.items]
                if not page.has_next:
                    break
                after = page.next_cursor
            assert seen == expected, attr
