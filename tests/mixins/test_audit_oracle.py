"""The audit completeness oracle: every mutation path yields exactly one record per changed row.

Hypothesis draws sequences of transactions mixing every write path (ORM create/update/delete,
bulk_insert, bulk_update, bulk_upsert, bulk_delete; in trigger mode on PostgreSQL also raw SQL and
Pony's ``delete(bulk=True)``), some committed, some rolled back, some with a savepoint block that fails.
A Python model of the table gives each transaction's start and end state; the records of the
transaction must be exactly those of the rows that differ, with the right operation and old -> new
values (sensitive ``pin``: ``"***"``), all under one transaction id; a rolled-back transaction or
savepoint leaves no record.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import Database, Optional, Required, db_session, flush, select

import ponykit as pk
from ponykit.mixins import Audited, audit_entity, install_audit_triggers

ATTRS = ("code", "qty", "price", "note", "pin")

qtys = st.integers(-1000, 1000)
prices = st.one_of(st.none(), st.decimals(min_value=-999, max_value=999, places=2))
notes = st.one_of(st.none(), st.text("abcxyzÄΩ'%?\\\"", min_size=0, max_size=8))  # Pony strips whitespace
changes = st.fixed_dictionaries(
    {}, optional={"qty": qtys, "price": prices, "note": notes, "pin": st.booleans()}
)
new_row = st.fixed_dictionaries({"qty": qtys, "price": prices, "note": notes, "pin": st.booleans()})
pick = st.integers(0, 50)

op = st.one_of(
    st.tuples(st.just("create"), new_row),
    st.tuples(st.just("update"), pick, changes),
    st.tuples(st.just("delete"), pick),
    st.tuples(st.just("bulk_insert"), st.lists(new_row, min_size=1, max_size=3)),
    st.tuples(st.just("bulk_update"), st.lists(st.tuples(pick, changes), min_size=1, max_size=3)),
    st.tuples(
        st.just("bulk_upsert"), st.lists(st.tuples(st.booleans(), pick, new_row), min_size=1, max_size=3)
    ),
    st.tuples(st.just("bulk_delete"), st.lists(pick, min_size=1, max_size=3)),
)
raw_op = st.one_of(
    op,
    st.tuples(st.just("raw_update"), pick, qtys),
    st.tuples(st.just("pony_bulk_delete"), pick),
)


def transactions(ops: Any) -> Any:
    return st.lists(
        st.tuples(
            st.lists(ops, min_size=1, max_size=5),  # the transaction's operations
            st.sampled_from(["commit", "commit", "commit", "rollback"]),
            st.one_of(st.none(), st.lists(ops, min_size=1, max_size=3)),  # a savepoint block that fails
        ),
        min_size=1,
        max_size=4,
    )


class Boom(Exception):
    pass


def declare(db: Database, mode: str) -> Any:
    class Item(db.Entity, Audited):
        audit_mode = mode
        code = Required(str, 40, unique=True)
        qty = Required(int)
        price = Optional(Decimal, 10, 2)
        note = Optional(str, 20, nullable=True)
        pin = Optional(str, 40, nullable=True)

    pk.security.sensitive(Item.pin)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    if mode == "trigger":
        install_audit_triggers(db)
    return Item


class Model:
    """The table as the test believes it is: id -> attribute values."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, Any]] = {}
        self.codes = itertools.count()
        self.pins = itertools.count()

    def fresh_code(self) -> str:
        return f"c{next(self.codes)}"

    def values(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Concrete values of a drawn row or change (a pin is always new: set means changed)."""
        out = {k: v for k, v in spec.items() if k != "pin"}
        if "pin" in spec:
            out["pin"] = f"secret-{next(self.pins)}" if spec["pin"] else None
        return out

    def pick(self, i: int) -> int | None:
        ids = sorted(self.rows)
        return ids[i % len(ids)] if ids else None


def run_op(Item: Any, model: Model, operation: tuple[Any, ...]) -> None:
    kind = operation[0]
    if kind == "create":
        values = {"code": model.fresh_code(), **model.values(operation[1])}
        obj = Item(**values)
        flush()
        model.rows[obj.id] = values
    elif kind == "update":
        rid = model.pick(operation[1])
        if rid is not None:
            values = model.values(operation[2])
            Item[rid].set(**values)
            model.rows[rid].update(values)
    elif kind == "delete":
        rid = model.pick(operation[1])
        if rid is not None:
            Item[rid].delete()
            flush()
            del model.rows[rid]
    elif kind == "bulk_insert":
        rows = [{"code": model.fresh_code(), **model.values(r)} for r in operation[1]]
        ids = pk.bulk_insert(Item, rows, return_ids=True)
        model.rows.update(zip(ids, rows, strict=True))
    elif kind == "bulk_update":
        by_id: dict[int, dict[str, Any]] = {}
        for i, spec in operation[1]:
            rid = model.pick(i)
            if rid is not None:
                by_id.setdefault(rid, {}).update(model.values(spec))
        rows = [{"id": rid, **values} for rid, values in by_id.items() if values]
        if rows:
            pk.bulk_update(Item, rows)
            for row in rows:
                model.rows[row["id"]].update({k: v for k, v in row.items() if k != "id"})
    elif kind == "bulk_upsert":
        rows, seen = [], set()
        for existing, i, spec in operation[1]:
            rid = model.pick(i) if existing else None
            code = model.rows[rid]["code"] if rid is not None else model.fresh_code()
            if code not in seen:
                seen.add(code)
                rows.append({"code": code, **model.values(spec)})
        result = pk.bulk_upsert(Item, rows, conflict="code", return_ids=True)
        assert result.ids is not None
        for rid, row in zip(result.ids, rows, strict=True):
            model.rows.setdefault(rid, {}).update(row)
    elif kind == "bulk_delete":
        ids = {rid for rid in (model.pick(i) for i in operation[1]) if rid is not None}
        if ids:
            pk.bulk_delete(Item, sorted(ids))
            for rid in ids:
                del model.rows[rid]
    elif kind == "raw_update":
        rid = model.pick(operation[1])
        if rid is not None:
            arguments = {"qty": operation[2], "rid": rid}
            Item._database_.execute("UPDATE item SET qty = $qty WHERE id = $rid", arguments)
            model.rows[rid]["qty"] = operation[2]
    elif kind == "pony_bulk_delete":
        rid = model.pick(operation[1])
        if rid is not None:
            Item.select(lambda i: i.id == rid).delete(bulk=True)
            del model.rows[rid]
    else:
        raise AssertionError(kind)


def json_form(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "pin":
        return "***"
    if name == "price":
        return str(value)
    return value


def expected_records(start: dict[int, dict[str, Any]], end: dict[int, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rid in set(start) | set(end):
        s, e = start.get(rid), end.get(rid)
        if s is None and e is not None:
            out[str(rid)] = ("insert", {a: [None, json_form(a, e[a])] for a in ATTRS if e.get(a) is not None})
        elif e is None and s is not None:
            out[str(rid)] = ("delete", {a: [json_form(a, s[a]), None] for a in ATTRS if s.get(a) is not None})
        elif s is not None and e is not None:
            diff = {
                a: [json_form(a, s.get(a)), json_form(a, e.get(a))] for a in ATTRS if s.get(a) != e.get(a)
            }
            if diff:
                out[str(rid)] = ("update", diff)
    return out


def check(db: Database, Item: Any, txs: list[Any]) -> None:
    history = audit_entity(db)
    with db_session:
        history.select().delete(bulk=True)
        Item.select().delete(bulk=True)
        history.select().delete(bulk=True)  # what trigger mode recorded of the line above
    model = Model()
    model.codes = itertools.count(10_000 * len(txs))
    for operations, outcome, failing in txs:
        start = {rid: dict(values) for rid, values in model.rows.items()}
        with db_session:
            last = max(select(h.id for h in history).fetch() or [0])
        try:
            with db_session:
                for operation in operations:
                    run_op(Item, model, operation)
                if failing is not None:
                    before = {rid: dict(values) for rid, values in model.rows.items()}
                    with pytest.raises(Boom), pk.savepoint(db):
                        for operation in failing:
                            run_op(Item, model, operation)
                        raise Boom
                    model.rows = before
                if outcome == "rollback":
                    raise Boom
        except Boom:
            model.rows = start
        with db_session:
            found = select(h for h in history if h.id > last)
            records = [(h.key, h.op, orjson.loads(h.changes), h.tx) for h in found]
            current = {i.id: {a: getattr(i, a) for a in ATTRS} for i in Item.select()}
        assert current == model.rows  # the model is right about the table
        expected = expected_records(start, model.rows)
        got = {key: (op_, ch) for key, op_, ch, _ in records}
        assert len(got) == len(records), records  # one record per row
        assert got == expected
        assert len({tx for *_, tx in records}) <= 1  # all records of one transaction share its id


def test_audit_oracle_app_mode(db: Database) -> None:
    """Every ORM and bulk path, on every backend: exactly the records the model predicts."""
    Item = declare(db, "app")

    @given(transactions(op))
    def prop(txs: list[Any]) -> None:
        check(db, Item, txs)

    prop()


@pytest.mark.backends("postgres")
def test_audit_oracle_trigger_mode(db: Database) -> None:
    """Trigger mode on PostgreSQL: the same records, raw SQL and Pony's delete(bulk=True) included."""
    Item = declare(db, "trigger")

    @given(transactions(raw_op))
    def prop(txs: list[Any]) -> None:
        check(db, Item, txs)

    prop()
