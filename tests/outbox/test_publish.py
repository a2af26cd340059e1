"""publish(): one outbox row in the caller's transaction, exact JSON payloads, clear refusals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import Database, Required, db_session, rollback

import ponykit as pk
from ponykit.errors import OutboxError
from ponykit.outbox import Relay, publish

from ._helpers import RecordingPublisher, make_outbox_db, pending_count


def test_publish_writes_a_row_that_commits_with_the_transaction(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    with db_session:
        db.Order(total=10)
        message_id = publish("orders.created", {"total": 10}, key="order-1", headers={"a": "b"})
    UUID(message_id)  # a UUID in text form
    outbox = pk.outbox.outbox_entity(db)
    with db_session:
        row = outbox.get(id=message_id)
        assert (row.aggregatetype, row.aggregateid, row.type) == (
            "orders.created",
            "order-1",
            "orders.created",
        )
        assert orjson.loads(row.payload) == {"total": 10}
        assert orjson.loads(row.headers) == {"a": "b"}
        assert row.sent_at is None and row.attempts == 0
    publisher = RecordingPublisher()
    assert Relay(db, publisher).run_once() == 1
    [message] = publisher.messages
    assert (message.id, message.topic, message.key, message.type) == (
        message_id,
        "orders.created",
        "order-1",
        "orders.created",
    )
    assert message.headers == {"a": "b"} and orjson.loads(message.payload) == {"total": 10}
    assert message.created_at is not None and message.created_at.tzinfo is not None


def test_rolled_back_transactions_are_never_published(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    with pytest.raises(RuntimeError), db_session:
        publish("t", {"n": 1}, key="k")
        raise RuntimeError("the business transaction fails")
    with db_session:
        publish("t", {"n": 2}, key="k")
        rollback()  # an explicit rollback in the middle of the session
        publish("t", {"n": 3}, key="k")
    publisher = RecordingPublisher()
    relay = Relay(db, publisher)
    while relay.run_once():
        pass
    assert [orjson.loads(m.payload) for m in publisher.messages] == [{"n": 3}]
    assert pending_count(db) == 0


def test_outside_a_session_or_without_the_outbox(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    with pytest.raises(OutboxError, match="outside a db_session"):
        publish("t", {})
    plain = make_db()
    pk.attach(plain)
    plain.generate_mapping(create_tables=True)
    with db_session, pytest.raises(OutboxError, match=r"attach\(db, outbox=True\)"):
        publish("t", {}, db=plain)
    with pytest.raises(OutboxError, match=r"attach\(db, outbox=True\)"):
        Relay(plain, RecordingPublisher())
    with db_session:
        publish("t", {}, db=db)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"x": float("nan")}, "JSON cannot represent"),
        ([float("inf")], "JSON cannot represent"),
        ({1: "a"}, "keys are text"),
        (2**64, "64-bit"),
        (object(), "no JSON form"),
        (b"{not json", "not one valid UTF-8 JSON"),
    ],
)
def test_payloads_without_an_exact_json_form_are_refused(
    make_db: Callable[[], Database], payload: Any, match: str
) -> None:
    make_outbox_db(make_db)
    with db_session, pytest.raises(OutboxError, match=match):
        publish("t", payload)


def test_rich_values_and_encoded_json(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    uid = UUID("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
    with db_session:
        publish("t", {"d": Decimal("12.50"), "at": datetime(2024, 1, 2, 3, 4, 5), "u": uid, "t": (1, 2)})
        publish("t", b'{"already":"encoded"}')
        publish("t", "a string is a JSON string")
    publisher = RecordingPublisher()
    Relay(db, publisher).run_once()
    assert [orjson.loads(m.payload) for m in publisher.messages] == [
        {"d": "12.50", "at": "2024-01-02T03:04:05", "u": str(uid), "t": [1, 2]},
        {"already": "encoded"},
        "a string is a JSON string",
    ]


def test_entity_payloads_and_sensitive_attributes(make_db: Callable[[], Database]) -> None:
    db = make_db()

    class Customer(db.Entity):  # type: ignore[name-defined]
        name = Required(str)
        password_hash = Required(str)

    pk.security.sensitive(Customer.password_hash)
    pk.attach(db, outbox=True)
    db.generate_mapping(create_tables=True)
    with db_session:
        customer = Customer(name="Ann", password_hash="s3cr3t-hash")
        with pytest.raises(OutboxError, match="Customer.*'password_hash' is sensitive") as info:
            publish("customers", {"customer": customer})
        assert "s3cr3t" not in str(info.value)
        publish("customers", customer, allow_sensitive=True)
    publisher = RecordingPublisher()
    Relay(db, publisher).run_once()
    assert orjson.loads(publisher.messages[0].payload) == {
        "id": 1,
        "name": "Ann",
        "password_hash": "s3cr3t-hash",
    }


def test_bad_arguments(make_db: Callable[[], Database]) -> None:
    make_outbox_db(make_db)
    with db_session:
        with pytest.raises(OutboxError, match="topic must be a non-empty str"):
            publish("", {})
        with pytest.raises(OutboxError, match="key must be"):
            publish("t", {}, key="k" * 256)
        with pytest.raises(OutboxError, match="headers"):
            publish("t", {}, headers={"a": 1})  # type: ignore[dict-item]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(payload=json_values, key=st.none() | st.text(min_size=1, max_size=20))
def test_json_payloads_round_trip_exactly(
    backend_name: str, make_db: Callable[[], Database], payload: Any, key: str | None
) -> None:
    db = _shared_db(make_db)
    with db_session:
        message_id = publish("t", payload, key=key)
    publisher = RecordingPublisher()
    Relay(db, publisher).run_once()
    [message] = [m for m in publisher.messages if m.id == message_id]
    assert orjson.loads(message.payload) == payload
    assert message.key == key


_made: dict[int, Database] = {}


def _shared_db(make_db: Callable[[], Database]) -> Database:
    # One Database per test (hypothesis runs the body many times with the same fixtures).
    db = _made.get(id(make_db))
    if db is None:
        _made.clear()
        db = _made[id(make_db)] = make_outbox_db(make_db)
    return db


@given(payload=json_values, where=st.integers(min_value=0, max_value=5))
def test_sensitive_entities_are_refused_anywhere_in_a_payload(
    make_db: Callable[[], Database], payload: Any, where: int
) -> None:
    db = _shared_sensitive_db(make_db)
    with db_session:
        customer = db.Customer.get(name="Ann") or db.Customer(name="Ann", password_hash="s3cr3t-hash")
        nested: Any = customer
        for level in range(where):  # bury the object in lists and dicts beside random data
            nested = [payload, nested] if level % 2 else {"data": payload, "inner": nested}
        before = pk.outbox.outbox_entity(db).select().count()
        with pytest.raises(OutboxError, match="'password_hash' is sensitive") as info:
            publish("customers", nested)
        assert "s3cr3t" not in str(info.value)
        assert pk.outbox.outbox_entity(db).select().count() == before  # nothing was written


def _shared_sensitive_db(make_db: Callable[[], Database]) -> Database:
    key = -id(make_db)
    db = _made.get(key)
    if db is None:
        _made.clear()
        db = make_db()

        class Customer(db.Entity):  # type: ignore[name-defined]
            name = Required(str)
            password_hash = Required(str)

        pk.security.sensitive(Customer.password_hash)
        pk.attach(db, outbox=True)
        db.generate_mapping(create_tables=True)
        _made[key] = db
    return db


def test_attach_declares_debezium_compatible_tables(make_db: Callable[[], Database]) -> None:
    db = make_db()
    with pytest.raises(pk.OptionError, match="outbox"):
        pk.attach(db, outbox="yes")  # type: ignore[arg-type]
    pk.attach(db, outbox=True)
    pk.attach(db, inbox=True)  # a second call adds the inbox and keeps the outbox
    db.generate_mapping(create_tables=True)
    with db_session:
        publish("t", {"n": 1}, key="k", headers={"h": "v"}, type="Created")
        row = db.select(
            "id, aggregatetype, aggregateid, type, payload, headers, created_at, sent_at, attempts, "
            "last_error, seq FROM ponykit_outbox"
        )[0]
        assert (row.aggregatetype, row.aggregateid, row.type, row.attempts) == ("t", "k", "Created", 0)
        assert row.sent_at is None and row.last_error is None
        assert db.select("aggregateid, pending, turn FROM ponykit_outbox_key") == [("k", 1, 0)] or (
            db.select("aggregateid FROM ponykit_outbox_key") == []  # SQLite: no key locks needed
        )
        assert db.select("message_id, processed_at FROM ponykit_inbox") == []


def test_a_rolled_back_savepoint_takes_its_messages_with_it(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    with db_session:
        kept = publish("t", {"n": 1}, key="k")
        with pytest.raises(RuntimeError), pk.savepoint():
            publish("t", {"n": 2}, key="k")
            raise RuntimeError("the inner step fails")
        also_kept = publish("t", {"n": 3}, key="k")
    publisher = RecordingPublisher()
    Relay(db, publisher).run_once()
    assert publisher.ids() == [kept, also_kept]
