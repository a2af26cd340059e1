"""Audited app mode's bulk_update fast path (a batch's records as one block, a generated diff) against
the ORM's path: same records for the same changes, folding with other writes, text that COPY escapes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pony.orm import Database, Optional, Required, db_session, flush, select

import ponykit as pk
from ponykit.mixins import Audited, audit_actor, audit_entity, install_audit_triggers


def declare(db: Database) -> tuple[Any, Any]:
    """Two identical audited entities: one written by the ORM, one by bulk_update (the oracle pair)."""

    def columns() -> dict[str, Any]:
        return {
            "name": Required(str, 60),
            "qty": Required(int),
            "price": Optional(Decimal, 10, 2),
            "ratio": Optional(float),
            "active": Required(bool),
            "when": Optional(dt.datetime),
            "note": Optional(str, nullable=True),
        }

    orm_item = type("OrmItem", (db.Entity, Audited), columns())
    bulk_item = type("BulkItem", (db.Entity, Audited), columns())
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return orm_item, bulk_item


def changes_of(db: Database, entity: str) -> dict[str, tuple[str, dict[str, Any], str | None]]:
    history = audit_entity(db)
    with db_session:
        rows = select(h for h in history if h.entity == entity)
        return {h.key: (h.op, orjson.loads(h.changes), h.actor) for h in rows}


START = {
    "name": "a",
    "qty": 1,
    "price": Decimal("1.50"),
    "ratio": 0.5,
    "active": True,
    "when": dt.datetime(2024, 1, 2, 3, 4, 5),
    "note": None,
}

texts = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=12
).map(lambda s: s.strip() or "x")  # Pony strips a str's outer whitespace
row_changes = st.fixed_dictionaries(
    {},
    optional={
        "name": texts,
        "qty": st.integers(-(2**31), 2**31 - 1),
        "price": st.one_of(st.none(), st.decimals(min_value=-999, max_value=999, places=2)),
        "ratio": st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
        "active": st.booleans(),
        "when": st.one_of(st.none(), st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1))),
        "note": st.one_of(st.none(), texts),
    },
)


@settings(max_examples=15, deadline=None)
@given(batches=st.lists(st.lists(row_changes, min_size=4, max_size=4), min_size=1, max_size=3))
def _check_bulk_update_records_equal_orm_records(db: Database, entities: Any, batches: Any) -> None:
    orm_item, bulk_item = entities
    with db_session:
        orm_item.select().delete(bulk=True)
        bulk_item.select().delete(bulk=True)
        audit_entity(db).select().delete(bulk=True)
        for i in range(4):
            orm_item(id=i + 1, **START)
            bulk_item(id=i + 1, **START)
    with db_session:
        audit_entity(db).select().delete(bulk=True)
    with audit_actor("al\\ice\t\n"), db_session:
        for batch in batches:
            for i, values in enumerate(batch):
                if values:
                    orm_item[i + 1].set(**values)
            flush()
            rows = [{"id": i + 1, **values} for i, values in enumerate(batch) if values]
            if rows:
                pk.bulk_update(bulk_item, rows)  # rows may set different attributes: several groups
    orm, bulk = changes_of(db, "OrmItem"), changes_of(db, "BulkItem")
    assert bulk == orm
    with db_session:
        for i in range(4):  # and the history holds what the rows hold now
            new = {k: v for k, (_, v) in bulk.get(str(i + 1), ("", {}, None))[1].items()}
            assert {k: bulk_item[i + 1].to_dict()[k] for k in new} == {
                k: orm_item[i + 1].to_dict()[k] for k in new
            }


def test_bulk_update_records_equal_the_orm_records(db: Database) -> None:
    entities = declare(db)
    _check_bulk_update_records_equal_orm_records(db, entities)


def test_a_block_folds_with_later_writes_of_its_rows(db: Database) -> None:
    _, item = declare(db)
    with db_session:
        for i in range(3):
            item(id=i + 1, **START)
    with db_session:
        audit_entity(db).select().delete(bulk=True)
    with db_session:
        pk.bulk_update(item, [{"id": 1, "qty": 2}, {"id": 2, "qty": 2}, {"id": 3, "qty": 2}])
        pk.bulk_update(item, [{"id": 1, "qty": 3, "name": "b"}])  # a second block, the same row
        item[2].qty = 1  # changed back by the ORM: no record
        item[3].note = "n"
    got = changes_of(db, "BulkItem")
    assert got == {
        "1": ("update", {"qty": [1, 3], "name": ["a", "b"]}, None),
        "3": ("update", {"qty": [1, 2], "note": [None, "n"]}, None),
    }


def test_a_row_set_by_two_groups_of_one_batch_has_one_record_from_before_the_batch(db: Database) -> None:
    """Two groups of one batch are two statements; the second sees the first's write, the record keeps
    the values before the batch."""
    _, item = declare(db)
    with db_session:
        item(id=1, **START)
        item(id=2, **START)
    with db_session:
        audit_entity(db).select().delete(bulk=True)
    with db_session:
        pk.bulk_update(item, [{"id": 1, "qty": 2}, {"id": 2, "name": "c"}, {"id": 1, "name": "b", "qty": 3}])
    assert changes_of(db, "BulkItem") == {
        "1": ("update", {"qty": [1, 3], "name": ["a", "b"]}, None),
        "2": ("update", {"name": ["a", "c"]}, None),
    }


def test_rows_written_with_their_own_values_leave_no_record(db: Database) -> None:
    _, item = declare(db)
    with db_session:
        for i in range(3):
            item(id=i + 1, **START)
    with db_session:
        audit_entity(db).select().delete(bulk=True)
    same = {"name": "a", "qty": 1, "price": Decimal("1.5")}  # 1.5 is stored as 1.50: the same value
    with db_session:
        pk.bulk_update(item, [{"id": 1, **same}, {"id": 2, **same, "qty": 5}, {"id": 3, **same}])
    assert changes_of(db, "BulkItem") == {"2": ("update", {"qty": [1, 5]}, None)}


def test_escapes_and_non_bmp_text_reach_the_history_intact(db: Database) -> None:
    _, item = declare(db)
    with db_session:
        item(id=1, **START)
        item(id=2, **START)
    with db_session:
        audit_entity(db).select().delete(bulk=True)
    tricky = 'a\\b\t"c"\nd 🐴 \\N é'
    with audit_actor("who\\N\t\r\nx"), db_session:
        pk.bulk_update(item, [{"id": 1, "note": tricky}, {"id": 2, "name": "\\"}])
    assert changes_of(db, "BulkItem") == {
        "1": ("update", {"note": [None, tricky]}, "who\\N\t\r\nx"),
        "2": ("update", {"name": ["a", "\\"]}, "who\\N\t\r\nx"),
    }
    with db_session:
        assert item[1].history()[-1].changes == {"note": (None, tricky)}


@pytest.mark.backends("postgres")
def test_trigger_mode_update_records_equal_app_mode_records(db: Database) -> None:
    """Trigger mode prints an update's changes as JSON text itself: parsed, they equal app mode's."""

    def fields() -> dict[str, Any]:
        return {
            "name": Required(str, 60),
            "qty": Required(int),
            "price": Optional(Decimal, 10, 2),
            "ratio": Optional(float),
            "when": Optional(dt.datetime),
            "note": Optional(str, nullable=True),
            "flag": Optional(bool),
            "big": Optional(int, size=64),
        }

    app = type("AppThing", (db.Entity, Audited), fields())
    trig = type("TrigThing", (db.Entity, Audited), {"audit_mode": "trigger", **fields()})
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    install_audit_triggers(db)
    start = {
        "name": "a",
        "qty": 1,
        "price": Decimal("1.50"),
        "ratio": 0.1,
        "when": None,
        "note": "x",
        "flag": True,
        "big": 2**40,
    }
    with db_session:
        for entity in (app, trig):
            entity(id=1, **start)
            entity(id=2, **start)
    with db_session:
        audit_entity(db).select().delete(bulk=True)
    rows = [
        {"id": 1, "name": 'q"\\\x01\u2028 🐴', "price": None, "ratio": 1e-7, "when": dt.datetime(2024, 5, 6)},
        {"id": 2, "qty": -5, "note": None, "price": Decimal("999.99"), "flag": False, "big": -(2**62)},
        {"id": 1, "flag": None, "big": None},
    ]
    with db_session:
        pk.bulk_update(app, rows)
        pk.bulk_update(trig, rows)
    app_records, trig_records = changes_of(db, "AppThing"), changes_of(db, "TrigThing")
    assert {k: v[:2] for k, v in trig_records.items()} == {k: v[:2] for k, v in app_records.items()}
    assert set(app_records) == {"1", "2"}
