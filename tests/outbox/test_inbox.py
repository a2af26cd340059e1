"""inbox(db).once: effects once per message id, in the handler's own transaction."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from pony.orm import Database, db_session, select

import ponykit as pk
from ponykit.errors import OutboxError
from ponykit.outbox import inbox

from ._helpers import make_outbox_db


def effects(db: Database) -> list[str]:
    with db_session:
        return sorted(select(e.message_id for e in db.Effect))


def handle(db: Database, message_id: str, *, fail: bool = False) -> bool:
    """A consumer: records an effect for a new message; True if the body ran."""
    with db_session:
        with inbox(db).once(message_id) as new:
            if new:
                db.Effect(message_id=message_id)
                if fail:
                    raise RuntimeError("the handler fails after its effect")
        return new


def test_a_committed_message_is_skipped_on_redelivery(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    assert handle(db, "m1") is True
    assert handle(db, "m1") is False
    assert handle(db, "m2") is True
    assert effects(db) == ["m1", "m2"]
    with db_session:
        assert {r.message_id for r in pk.outbox.inbox_entity(db).select()} == {"m1", "m2"}


def test_a_rolled_back_message_is_processed_again(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    with pytest.raises(RuntimeError):
        handle(db, "m1", fail=True)
    assert effects(db) == []
    assert handle(db, "m1") is True
    assert effects(db) == ["m1"]


def test_as_a_decorator(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    calls: list[str] = []

    @inbox(db).once(lambda message: message["id"])
    def consume(message: dict[str, Any]) -> str:
        calls.append(message["id"])
        db.Effect(message_id=message["id"])
        return "done"

    assert consume({"id": "a"}) == "done"
    assert consume({"id": "a"}) is None  # a duplicate: the handler does not run
    assert consume({"id": "b"}) == "done"
    assert calls == ["a", "b"] and effects(db) == ["a", "b"]

    @inbox(db).once("fixed")
    def once_only() -> int:
        return 1

    assert once_only() == 1 and once_only() is None


def test_concurrent_duplicate_deliveries_have_their_effects_once(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    ids = [f"m{i}" for i in range(10)]
    start = threading.Barrier(4)
    ran: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def consumer() -> None:
        try:
            start.wait()
            for mid in ids:  # every consumer gets every message: 4 deliveries of each
                for _attempt in range(20):
                    try:
                        if handle(db, mid):
                            with lock:
                                ran.append(mid)
                        break
                    except Exception as exc:
                        if pk.classify_error(exc) != "transient":
                            raise
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=consumer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(ran) == sorted(ids)
    assert effects(db) == sorted(ids)


def test_misuse_is_explained(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    with pytest.raises(OutboxError, match="inside the db_session"), inbox(db).once("m"):
        pass
    with db_session:
        with pytest.raises(OutboxError, match="non-empty str"):
            inbox(db).once("")
        with pytest.raises(OutboxError, match="is a decorator"), inbox(db).once(lambda m: m):
            pass
    plain = make_db()
    pk.attach(plain, outbox=True)
    plain.generate_mapping(create_tables=True)
    with pytest.raises(OutboxError, match=r"attach\(db, inbox=True\)"):
        inbox(plain)
