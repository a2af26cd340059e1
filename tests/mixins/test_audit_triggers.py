"""Audited in trigger mode (PostgreSQL): generated triggers record every write, raw SQL included."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from pony.orm import Database, Optional, Required, db_session, flush, select

import ponykit as pk
from ponykit.mixins import Audited, audit_entity, audit_trigger_sql, install_audit_triggers

pytestmark = pytest.mark.backends("postgres")


def declare(db: Database) -> tuple[Any, Any]:
    class Account(db.Entity, Audited):
        audit_mode = "trigger"
        name = Required(str, unique=True)
        balance = Required(Decimal, 12, 2)
        pin = Optional(str, nullable=True)

    class Note(db.Entity, Audited):  # app mode beside it
        text = Required(str)

    pk.security.sensitive(Account.pin)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    install_audit_triggers(db)
    return Account, Note


def records(db: Database) -> list[tuple[str, str, str, dict[str, Any], str | None, str]]:
    history = audit_entity(db)
    with db_session:
        rows = select(h for h in history).order_by(lambda h: h.id)
        return [(h.entity, h.key, h.op, orjson.loads(h.changes), h.actor, h.tx) for h in rows]


def test_raw_sql_is_recorded_with_the_transactions_actor(db: Database) -> None:
    declare(db)
    with db_session:
        db.execute("SELECT set_config('app.actor', 'alice', true)")
        db.execute("INSERT INTO account (name, balance, pin) VALUES ('a', 10.50, 'secret-1')")
    with db_session:
        db.execute("UPDATE account SET balance = balance + 1, pin = 'secret-2'")
    with db_session:
        db.execute("DELETE FROM account")
    got = records(db)
    assert [(op, changes, actor) for _, _, op, changes, actor, _ in got] == [
        ("insert", {"name": [None, "a"], "balance": [None, "10.50"], "pin": [None, "***"]}, "alice"),
        ("update", {"balance": ["10.50", "11.50"], "pin": ["***", "***"]}, None),
        ("delete", {"name": ["a", None], "balance": ["11.50", None], "pin": ["***", None]}, None),
    ]
    assert "secret" not in repr(got)
    assert len({tx for *_, tx in got}) == 3


def test_writes_of_one_row_in_one_transaction_fold_into_one_record(db: Database) -> None:
    Account, _ = declare(db)
    with db_session:
        a = Account(name="a", balance=Decimal(1))
        flush()
        db.execute("UPDATE account SET balance = 2")
        b = Account(name="b", balance=Decimal(1))
        flush()
        db.execute("DELETE FROM account WHERE name = 'b'")
    with db_session:
        db.execute("UPDATE account SET balance = 3")
        pk.bulk_update(Account, [{"id": a.id, "balance": Decimal(4)}])
        db.execute("UPDATE account SET balance = 4")  # changes nothing
    with db_session:
        db.execute("UPDATE account SET balance = 5")
        db.execute("UPDATE account SET balance = 4")  # back to what it was: no record
    with db_session:
        db.execute("DELETE FROM account")
        db.execute("INSERT INTO account (id, name, balance) VALUES ($i, 'a', 7)", {"i": a.id})
    assert b.id != a.id
    got = [(key, op, changes) for _, key, op, changes, _, _ in records(db)]
    assert got == [
        (str(a.id), "insert", {"name": [None, "a"], "balance": [None, "2.00"]}),
        (str(a.id), "update", {"balance": ["2.00", "4.00"]}),
        (str(a.id), "update", {"balance": ["4.00", "7.00"]}),  # deleted and inserted again
    ]


def test_rollbacks_leave_no_record(db: Database) -> None:
    Account, _ = declare(db)
    with pytest.raises(RuntimeError), db_session:
        Account(name="a", balance=Decimal(1))
        flush()
        raise RuntimeError
    with db_session:
        with pytest.raises(RuntimeError), pk.savepoint(db):
            db.execute("INSERT INTO account (name, balance) VALUES ('b', 1)")
            raise RuntimeError
        Account(name="c", balance=Decimal(1))
    assert [changes["name"][1] for _, _, _, changes, _, _ in records(db)] == ["c"]


def test_records_of_a_savepoint_rolled_back_are_written_again_by_later_statements(db: Database) -> None:
    """The first statement of a transaction inserts its records without looking for earlier ones (a
    transaction-local marker says none was written); a savepoint rolled back takes the marker with its
    records, a savepoint released keeps both, so later writes still fold into one record per row."""
    Account, _ = declare(db)
    with db_session:
        a = Account(name="a", balance=Decimal(1))
        Account(name="b", balance=Decimal(1))
    with db_session:
        with pytest.raises(RuntimeError), pk.savepoint(db):
            db.execute("UPDATE account SET balance = 2")
            raise RuntimeError
        db.execute("UPDATE account SET balance = 3 WHERE name = 'a'")
        with pk.savepoint(db):
            db.execute("UPDATE account SET balance = 4")
        pk.bulk_update(Account, [{"id": a.id, "balance": Decimal(5)}])
    with db_session, pytest.raises(RuntimeError), pk.savepoint(db):
        db.execute("UPDATE account SET balance = 6")
        raise RuntimeError
    got = [(key, op, changes) for _, key, op, changes, _, _ in records(db)]
    assert got[2:] == [
        (str(a.id), "update", {"balance": ["1.00", "5.00"]}),
        (str(a.id + 1), "update", {"balance": ["1.00", "4.00"]}),
    ]


def test_app_and_trigger_mode_share_the_transaction_id(db: Database) -> None:
    Account, Note = declare(db)
    with db_session:
        Account(name="a", balance=Decimal(1))
        Note(text="n")
    got = records(db)
    assert sorted(entity for entity, *_ in got) == ["Account", "Note"]
    assert len({tx for *_, tx in got}) == 1


def test_install_is_idempotent_and_returns_its_statements(db: Database) -> None:
    Account, _ = declare(db)
    again = install_audit_triggers(db)
    assert again == audit_trigger_sql(db)
    assert any("CREATE TRIGGER" in s for s in again)
    with db_session:
        count = db.select(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'account'::regclass AND NOT tgisinternal"
        )
        assert count == [3]
        Account(name="a", balance=Decimal(1))
    assert len(records(db)) == 1


def test_history_of_an_object(db: Database) -> None:
    Account, _ = declare(db)
    with db_session:
        a = Account(name="a", balance=Decimal("1.25"))
    with db_session:
        db.execute("UPDATE account SET balance = 2.5")
    with db_session:
        history = Account[a.id].history()
    assert [(r.op, r.changes) for r in history] == [
        ("insert", {"name": (None, "a"), "balance": (None, Decimal("1.25"))}),
        ("update", {"balance": (Decimal("1.25"), Decimal("2.50"))}),
    ]


def test_rls_context_actor_reaches_the_triggers(db: Database) -> None:
    Account, _ = declare(db)
    with pk.rls_context(actor="alice"), db_session:
        Account(name="a", balance=Decimal("1.00"))
    with pk.rls_context(actor="bob"), db_session:
        db.execute("UPDATE account SET balance = 2")
    assert [(op, actor) for _, _, op, _, actor, _ in records(db)] == [("insert", "alice"), ("update", "bob")]
