"""Audited in app mode: history(), folding per transaction, rollbacks, actors, secrets, documented gaps."""

from __future__ import annotations

from datetime import timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pony.orm import (
    Database,
    Optional,
    Required,
    Set,
    TransactionIntegrityError,
    commit,
    db_session,
    flush,
    rollback,
    select,
)

import ponykit as pk
from ponykit.errors import BulkWriteError, ConfigurationError, UnsupportedDatabase
from ponykit.mixins import Audited, AuditRecord, audit_actor, audit_entity, audit_trigger_sql

KEY = "k1:" + "A" * 43 + "="


def declare(db: Database, **attach: Any) -> tuple[Any, Any]:
    class Item(db.Entity, Audited):
        name = Required(str, 40, unique=True)
        qty = Required(int)
        price = Optional(Decimal, 10, 2)
        pin = Optional(str, 40, nullable=True)

    class Plain(db.Entity):
        name = Required(str, 40)

    pk.security.sensitive(Item.pin)
    pk.attach(db, **attach)
    db.generate_mapping(create_tables=True)
    return Item, Plain


def records(db: Database) -> list[tuple[str, str, str, dict[str, Any], str | None, str]]:
    history = audit_entity(db)
    with db_session:
        rows = select(h for h in history).order_by(lambda h: h.id)
        return [(h.entity, h.key, h.op, orjson.loads(h.changes), h.actor, h.tx) for h in rows]


def test_history_of_an_object_oldest_first_with_python_values(db: Database) -> None:
    Item, _ = declare(db)
    with audit_actor("alice"), db_session:
        item = Item(name="a", qty=1, price=Decimal("1.50"))
    with audit_actor("bob"), db_session:
        Item[item.id].set(qty=2, price=Decimal("2.25"))
    with db_session:
        history = Item[item.id].history()
    assert [r.op for r in history] == ["insert", "update"]
    first, second = history
    assert isinstance(first, AuditRecord)
    assert first.entity == "Item" and first.key == item.id
    assert first.changes == {"name": (None, "a"), "qty": (None, 1), "price": (None, Decimal("1.50"))}
    assert first.actor == "alice" and second.actor == "bob"
    assert second.changes == {"qty": (1, 2), "price": (Decimal("1.50"), Decimal("2.25"))}
    assert first.at.tzinfo == timezone.utc and first.at <= second.at
    assert first.tx != second.tx


def test_one_record_per_row_per_transaction(db: Database) -> None:
    Item, _ = declare(db)
    with db_session:
        a = Item(name="a", qty=1)
        flush()
        a.qty = 2  # insert then update: one insert with the final values
        b = Item(name="b", qty=1)
        flush()
        b.delete()  # insert then delete: nothing
    with db_session:
        Item[a.id].qty = 3
        flush()
        pk.bulk_update(Item, [{"id": a.id, "qty": 4}])
        Item[a.id].qty = 5  # three writes: one update, first old -> last new
    with db_session:
        pk.bulk_update(Item, [{"id": a.id, "qty": 5}])  # writes the same value: no phantom record
        Item[a.id].qty = 6
        flush()
        Item[a.id].qty = 5  # changed back before commit: no record
    got = [(op, changes) for _, _, op, changes, _, _ in records(db)]
    assert got == [
        ("insert", {"name": [None, "a"], "qty": [None, 2]}),
        ("update", {"qty": [2, 5]}),
    ]


def test_rolled_back_transactions_and_savepoints_leave_no_record(db: Database) -> None:
    Item, _ = declare(db)
    with pytest.raises(RuntimeError), db_session:
        Item(name="a", qty=1)
        pk.bulk_insert(Item, [{"name": "b", "qty": 1}])
        raise RuntimeError("rolled back")
    with db_session:
        Item(name="c", qty=1)
        commit()
        Item(name="d", qty=1)
        rollback()
        with pytest.raises(KeyError), pk.savepoint(db):
            Item(name="e", qty=1)
            pk.bulk_update(Item, [{"id": 1, "qty": 9}])
            raise KeyError("savepoint")
        with pk.savepoint(db):  # a savepoint that succeeds keeps its records
            Item(name="f", qty=1)
    assert [(changes["name"][1], op) for _, _, op, changes, _, _ in records(db)] == [
        ("c", "insert"),
        ("f", "insert"),
    ]
    with db_session:
        assert sorted(select(i.name for i in Item)) == ["c", "f"]


def test_a_failed_bulk_call_caught_and_committed_leaves_no_record_of_it(db: Database) -> None:
    Item, _ = declare(db)
    with db_session:
        Item(name="x", qty=0)
        rows = [{"name": "a", "qty": 1}, {"name": "b", "qty": 1}, {"name": "c", "qty": "not a number"}]
        with pytest.raises(BulkWriteError):
            pk.bulk_insert(Item, rows, batch_size=1)  # batches 1 and 2 are written, then undone
    assert [changes["name"][1] for _, _, _, changes, _, _ in records(db)] == ["x"]


def test_explicit_commits_make_one_transaction_each(db: Database) -> None:
    Item, _ = declare(db)
    with db_session:
        item = Item(name="a", qty=1)
        commit()
        item.qty = 2
        commit()
        item.qty = 3
    txs = [tx for *_, tx in records(db)]
    assert len(txs) == 3 and len(set(txs)) == 3


def test_sensitive_and_encrypted_values_are_never_stored(db: Database) -> None:
    class Patient(db.Entity, Audited):
        name = Required(str)
        ssn = Optional(pk.types.EncryptedStr, nullable=True)
        pin = Optional(str, nullable=True)

    pk.security.sensitive(Patient.pin)
    pk.attach(db, keys=pk.security.KeyRing({"k1": pk.security.KeyRing.generate_key()}))
    db.generate_mapping(create_tables=True)
    secrets = ["111-22-3333", "444-55-6666", "pin-1234", "pin-9876", "777-88-9999"]
    with db_session:
        p = Patient(name="p", ssn=secrets[0], pin=secrets[2])
    with db_session:
        Patient[p.id].set(ssn=secrets[1], pin=secrets[3])
    with db_session:
        pk.bulk_update(Patient, [{"id": p.id, "ssn": secrets[4]}])
        pk.bulk_insert(Patient, [{"name": "q", "ssn": secrets[0], "pin": secrets[2]}])
    with db_session:
        Patient[p.id].delete()
    got = records(db)
    text = repr(got)
    for secret in secrets:
        assert secret not in text
    assert [(op, changes) for _, _, op, changes, _, _ in got] == [
        ("insert", {"name": [None, "p"], "ssn": [None, "***"], "pin": [None, "***"]}),
        ("update", {"ssn": ["***", "***"], "pin": ["***", "***"]}),
        ("update", {"ssn": ["***", "***"]}),
        ("insert", {"name": [None, "q"], "ssn": [None, "***"], "pin": [None, "***"]}),
        ("delete", {"name": ["p", None], "ssn": ["***", None], "pin": ["***", None]}),
    ]
    with db_session:
        history = Patient[2].history()
    assert history[0].changes["ssn"] == (None, "***")


def test_gap_pony_bulk_delete_and_raw_sql_are_not_recorded_in_app_mode(db: Database) -> None:
    """Documented: Pony's Query.delete(bulk=True) and raw SQL bypass Pony's objects and ponykit's bulk
    calls, so app mode records nothing for them (trigger mode does)."""
    Item, _ = declare(db)
    with db_session:
        Item(name="a", qty=1)
        Item(name="b", qty=1)
    before = len(records(db))
    with db_session:
        Item.select(lambda i: i.name == "a").delete(bulk=True)
        db.execute("UPDATE item SET qty = 7 WHERE name = 'b'")
    assert len(records(db)) == before
    with db_session:
        assert select(i.qty for i in Item)[:] == [7]


def test_cascaded_children_orm_recorded_bulk_delete_gap(db: Database) -> None:
    """ORM deletes cascade through Pony's objects (recorded); bulk_delete's cascade deletes the children
    with SQL and reports the parent's keys only (documented gap: no record for the children)."""

    class Order(db.Entity, Audited):
        ref = Required(str)
        lines = Set("Line", cascade_delete=True)

    class Line(db.Entity, Audited):
        order = Required(Order)
        sku = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        one = Order(ref="one")
        Line(order=one, sku="x")
        two = Order(ref="two")
        Line(order=two, sku="y")
    with db_session:
        Order[one.id].delete()
    deleted = [(entity, op) for entity, _, op, *_ in records(db)[4:]]
    assert sorted(deleted) == [("Line", "delete"), ("Order", "delete")]
    with db_session:
        pk.bulk_delete(Order, [two.id])
        assert Line.select().count() == 0
    deleted = [(entity, op) for entity, _, op, *_ in records(db)[6:]]
    assert deleted == [("Order", "delete")]


def test_relations_are_recorded_by_key(db: Database) -> None:
    class Team(db.Entity):
        name = Required(str)
        members = Set("Member")

    class Member(db.Entity, Audited):
        name = Required(str)
        team = Optional(Team)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        t1, t2 = Team(name="t1"), Team(name="t2")
        flush()
        m = Member(name="m", team=t1)
    with db_session:
        Member[m.id].team = Team[t2.id]
    with db_session:
        pk.bulk_update(Member, [{"id": m.id, "team": None}])
    got = [(op, changes) for _, _, op, changes, _, _ in records(db)]
    assert got == [
        ("insert", {"name": [None, "m"], "team": [None, t1.id]}),
        ("update", {"team": [t1.id, t2.id]}),
        ("update", {"team": [t2.id, None]}),
    ]


def test_actor_is_taken_when_the_write_is_flushed_or_at_commit(db: Database) -> None:
    Item, _ = declare(db)
    with audit_actor("outer"), db_session:
        Item(name="a", qty=1)
        flush()  # without it, bulk_insert's own flush would write "a" inside the inner block
        with audit_actor("inner"):
            pk.bulk_insert(Item, [{"name": "b", "qty": 1}])
        Item(name="c", qty=1)
    assert [(changes["name"][1], actor) for _, _, _, changes, actor, _ in records(db)] == [
        ("a", "outer"),
        ("b", "inner"),
        ("c", "outer"),
    ]


def test_history_table_is_not_audited_and_is_shared(db: Database) -> None:
    Item, Plain = declare(db)
    with db_session:
        Plain(name="p")
        Item(name="a", qty=1)
    got = records(db)
    assert [entity for entity, *_ in got] == ["Item"]


def test_bad_audit_mode_is_refused() -> None:
    db = Database()
    with pytest.raises(ConfigurationError, match="audit_mode"):

        class Thing(db.Entity, Audited):
            audit_mode = "sometimes"
            name = Required(str)


@pytest.mark.backends("sqlite", "mysql")
def test_trigger_mode_needs_postgres(db: Database) -> None:
    class Thing(db.Entity, Audited):
        audit_mode = "trigger"
        name = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with pytest.raises(UnsupportedDatabase, match="PostgreSQL"):
        audit_trigger_sql(db)


def test_an_audited_entity_of_a_database_not_attached_cannot_be_mapped(db: Database) -> None:
    """Without attach() no commit step would write the records: the history's UTC timestamp type needs
    ponykit's converters, so the mapping already refuses (and journal_events checks it again)."""

    class Thing(db.Entity, Audited):
        name = Required(str)

    with pytest.raises(TypeError, match="AwareDatetime"):
        db.generate_mapping(create_tables=True)


def test_a_sensitivity_declared_later_applies_to_later_records(db: Database) -> None:
    class Person(db.Entity, Audited):
        name = Required(str)
        pin = Optional(str, nullable=True)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        Person(name="a", pin="1111")
    pk.security.sensitive(Person.pin)
    with db_session:
        Person(name="b", pin="2222")
    got = [changes["pin"] for _, _, _, changes, _, _ in records(db)]
    assert got == [[None, "1111"], [None, "***"]]


def test_a_failure_writing_the_records_fails_the_commit(db: Database) -> None:
    Item, _ = declare(db)
    with db_session:
        db.execute("DROP TABLE ponykit_audit")
    with pytest.raises(Exception, match="(?i)ponykit_audit"), db_session:
        Item(name="a", qty=1)
    with db_session:
        assert Item.select().count() == 0  # rolled back with its (unwritable) record


@pytest.mark.backends("mysql")
def test_gap_mariadb_upsert_clash_on_another_unique_key_is_not_recorded(db: Database) -> None:
    """Documented: ON DUPLICATE KEY UPDATE also updates on a clash of another unique key; app mode looks
    the rows up by the conflict key, so that update leaves no record."""

    class Account(db.Entity, Audited):
        code = Required(str, 20, unique=True)
        email = Required(str, 40, unique=True)
        plan = Required(str, 20)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        Account(code="a", email="a@x", plan="free")
    before = len(records(db))
    with db_session:
        pk.bulk_upsert(Account, [{"code": "b", "email": "a@x", "plan": "pro"}], conflict="code")
        assert Account.select().first().plan == "pro"  # MariaDB updated row "a"
    assert len(records(db)) == before


def test_gap_lazy_attributes_never_loaded_are_missing_from_an_orm_delete(db: Database) -> None:
    """Documented: obj.delete() records what the session loaded; bulk_delete reads every column."""

    class Doc(db.Entity, Audited):
        title = Required(str)
        body = Optional(str, lazy=True, nullable=True)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        one, two = Doc(title="one", body="text"), Doc(title="two", body="text")
    with db_session:
        Doc[one.id].delete()
        pk.bulk_delete(Doc, [two.id])
    deletes = [changes for _, _, op, changes, _, _ in records(db) if op == "delete"]
    assert deletes == [{"title": ["one", None]}, {"title": ["two", None], "body": ["text", None]}]


class _User:
    def __init__(self, id: int) -> None:
        self.id = id


def test_actor_falls_back_to_the_acting_principal_then_to_the_rls_setting(db: Database) -> None:
    Item, _ = declare(db)
    with pk.acting_as(_User(7)), db_session:
        item = Item(name="a", qty=1)
    with pk.acting_as(_User(7)), audit_actor("alice"), db_session:  # an explicit actor wins
        Item[item.id].qty = 2
    with pk.rls_context(actor="batch-job"), db_session:
        Item[item.id].qty = 3
    with db_session:
        Item[item.id].qty = 4
    assert [r[4] for r in records(db)] == ["7", "alice", "batch-job", None]


def test_unchanged_custom_type_and_encrypted_values_are_not_recorded_as_changed(db: Database) -> None:
    """Pony keeps a custom type's stored form (naive UTC, ciphertext) as the value last read: an update
    of another attribute must not report them (Timestamped's created_at was, before the fix)."""

    class Member(db.Entity, pk.mixins.Timestamped, Audited):
        name = Required(str)
        ssn = Optional(pk.types.EncryptedStr, nullable=True)
        seen = Optional(pk.types.AwareDatetime, nullable=True)

    pk.attach(db, keys=pk.security.KeyRing({"k1": pk.security.KeyRing.generate_key()}))
    db.generate_mapping(create_tables=True)
    with db_session:
        m = Member(name="a", ssn="111-22-3333", seen=pk.mixins.utc_now())
    with db_session:
        Member[m.id].name = "b"  # loaded from the database: every value in its stored form
    with db_session:
        pk.bulk_update(Member, [{"id": m.id, "name": "c"}])
        Member[m.id].name = "d"
    updates = [sorted(changes) for _, _, op, changes, _, _ in records(db) if op == "update"]
    assert updates == [["name", "updated_at"], ["name", "updated_at"]]


def test_the_history_refuses_a_second_record_of_a_row_in_one_transaction(db: Database) -> None:
    """The unique key (entity, key, tx) exists in the database: the one-record rule is enforced there
    too (and history() reads through its index)."""
    Item, _ = declare(db)
    with db_session:
        item = Item(name="a", qty=1)
    history = audit_entity(db)
    with db_session:
        first = select(h for h in history).first()
        assert first is not None
        copy = {k: getattr(first, k) for k in ("entity", "key", "op", "changes", "actor", "at", "tx")}
    with pytest.raises(TransactionIntegrityError), db_session:
        history(**copy)
    with db_session:
        copy["tx"] = "another"
        history(**copy)  # the same row in another transaction: a record of its own
    with db_session:
        assert [r.tx for r in Item[item.id].history()] == [first.tx, "another"]
