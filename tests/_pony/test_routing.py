"""The routing door: the read-intent stack, write refusal, and provider methods chained under attach()."""

from __future__ import annotations

import contextvars
from typing import Any

import pytest
from pony.orm import Database, PrimaryKey, Required, db_session

import ponykit as pk
from ponykit import _pony

INTENT = _pony.ReadIntent("test()")
MOVING = _pony.ReadIntent("test()", "primary")


def test_intents_nest_and_unwind() -> None:
    def run() -> None:
        assert _pony.read_intent() is None
        _pony.push_read_intent(INTENT)
        token = _pony.set_read_intent(MOVING)
        assert _pony.read_intent() is MOVING
        _pony.reset_read_intent(token)
        assert _pony.read_intent() is INTENT
        _pony.push_read_intent(None)  # an inner block without intent
        assert _pony.read_intent() is None
        _pony.pop_read_intent()
        _pony.pop_read_intent()
        assert _pony.read_intent() is None

    contextvars.Context().run(run)


def test_refuse_write_outside_an_intent_does_nothing(db: Database) -> None:
    _pony.refuse_write(db, "an UPDATE statement")  # no intent: an ordinary session writes


def test_refuse_write_names_the_write_and_the_session(db: Database) -> None:
    def run() -> None:
        _pony.push_read_intent(INTENT)
        with pytest.raises(pk.ReadOnlySessionError, match=r"an UPDATE statement .*\(test\(\)\)"):
            _pony.refuse_write(db, "an UPDATE statement")

    contextvars.Context().run(run)


def test_on_write_primary_without_router_marks_the_session_moved(db: Database) -> None:
    class Thing(db.Entity):
        id = PrimaryKey(int)
        name = Required(str)

    db.generate_mapping(create_tables=True)

    def run() -> None:
        _pony.push_read_intent(MOVING)
        with db_session:
            Thing(id=1, name="a")
            flush_cache = _pony.require_session_cache(db)
            assert "Thing[1]" in _pony.describe_flush(flush_cache)
            assert _pony.pending_flush(flush_cache)
            _pony.refuse_write(db, "a flush")  # no router: nothing to move, no error
            assert _pony.is_moved_to_primary(db)
        with db_session:
            assert Thing[1].name == "a"

    contextvars.Context().run(run)


def test_chained_method_stays_under_attach(db: Database) -> None:
    calls: list[str] = []

    def make(original: Any) -> Any:
        def should_reconnect(exc: BaseException) -> bool:
            calls.append(type(exc).__name__)
            return bool(original(exc))

        return should_reconnect

    _pony.chain_provider_method(db, "should_reconnect", make)
    pk.attach(db)  # wraps should_reconnect again, on top: no "already wrapped" error
    assert _pony.is_provider_method_wrapped(db, "should_reconnect")
    assert db.provider.should_reconnect(ValueError()) is False
    assert calls == ["ValueError"]
    assert _pony.routes_reads(db) is None
