"""A value object repeated down a column (one timestamp for a whole batch) is encoded once, for the ponykit
types that say they are deterministic, and never for an encrypting type."""

from __future__ import annotations

import datetime as dt

import pytest
from pony.orm import Database, Optional, Required, db_session, select

import ponykit as pk

UTC = dt.timezone.utc


def test_repeated_aware_datetimes_are_stored_as_each_value_says(db: Database) -> None:
    class Event(db.Entity):
        n = Required(int)
        at = Required(pk.types.AwareDatetime, precision=6)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    now = dt.datetime(2026, 12, 7, 10, 0, 0, 123456, tzinfo=UTC)
    paris = now.astimezone(dt.timezone(dt.timedelta(hours=1)))  # equal instant, another object and zone
    later = now + dt.timedelta(seconds=1)
    values = [now, now, paris, now, later, later, now]
    with db_session:
        pk.bulk_insert(Event, [{"n": i, "at": v} for i, v in enumerate(values)])
    with db_session:
        stored = [e.at for e in select(e for e in Event).order_by(Event.n)]
    assert stored == [v.astimezone(UTC) for v in values]
    assert all(s.tzinfo == UTC for s in stored)


def test_a_repeated_invalid_value_is_refused_every_time(db: Database) -> None:
    class Event(db.Entity):
        at = Required(pk.types.AwareDatetime)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    naive = dt.datetime(2026, 12, 7, 10, 0)
    aware = naive.replace(tzinfo=UTC)
    for rows in ([{"at": naive}, {"at": naive}], [{"at": aware}, {"at": naive}, {"at": naive}]):
        with db_session, pytest.raises(pk.BulkWriteError, match="naive"):
            pk.bulk_insert(Event, rows)
    with db_session:
        assert select(e for e in Event).count() == 0


def test_an_encrypted_value_repeated_is_encrypted_for_each_row(db: Database) -> None:
    class Secret(db.Entity):
        n = Required(int)
        value = Optional(pk.types.EncryptedStr, nullable=True)

    pk.attach(db, keys=pk.security.KeyRing({"k1": pk.security.KeyRing.generate_key()}))
    db.generate_mapping(create_tables=True)
    same = "the same plaintext object"
    with db_session:
        pk.bulk_insert(Secret, [{"n": i, "value": same} for i in range(3)])
    with db_session:
        stored = list(db.select("SELECT value FROM secret ORDER BY n"))
        assert [s.value for s in select(s for s in Secret).order_by(Secret.n)] == [same] * 3
    assert len(set(stored)) == 3  # a fresh nonce per row: equal plaintexts never look equal


def test_a_callable_default_is_called_for_each_row_and_call(db: Database) -> None:
    """A row without the value takes the attribute's default: never a result remembered from before."""
    ticks = iter(dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=s) for s in range(100))

    class Event(db.Entity):
        n = Required(int)
        at = Required(pk.types.AwareDatetime, default=lambda: next(ticks))

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        pk.bulk_insert(Event, [{"n": 0}, {"n": 1}])
        pk.bulk_insert(Event, [{"n": 2}])
    with db_session:
        stored = [e.at.second for e in select(e for e in Event).order_by(Event.n)]
    assert stored == [0, 1, 2]
