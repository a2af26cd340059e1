"""Poison messages: set aside after max_attempts rejections, their key blocked, listed, requeued."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence

import pytest
from pony.orm import Database, db_session

import ponykit as pk
from ponykit.errors import OptionError, PublishError
from ponykit.outbox import Message, Relay, publish

from ._helpers import FailingPublisher, RecordingPublisher, make_outbox_db

SECRET = "card-4111-1111"


class RejectingPublisher(RecordingPublisher):
    """A broker that rejects every batch holding a message of topic ``poison`` (and confirms the rest)."""

    name = "rejecting"

    def publish(self, messages: Sequence[Message]) -> None:
        if any(m.topic == "poison" for m in messages):
            raise PublishError("broker 'rejecting' nacked a message")
        super().publish(messages)


def _run(relay: Relay, times: int) -> None:
    for _ in range(times):
        with contextlib.suppress(PublishError):
            relay.run_once()


def test_a_rejected_message_is_set_aside_and_blocks_only_its_key(
    make_db: Callable[[], Database], caplog: pytest.LogCaptureFixture
) -> None:
    db = make_outbox_db(make_db)
    with db_session:
        a1 = publish("t", {"n": 1}, key="a", db=db)
        bad = publish("poison", {"card": SECRET}, key="a", db=db)
        a2 = publish("t", {"n": 2}, key="a", db=db)
        b1 = publish("t", {"n": 3}, key="b", db=db)
        free = publish("t", {"n": 4}, db=db)
    broker = RejectingPublisher()
    relay = Relay(db, broker, max_attempts=3)
    with caplog.at_level(logging.ERROR, logger="ponykit.outbox"):
        _run(relay, 6)
    sent = broker.ids()
    assert sorted(sent) == sorted([a1, b1, free])  # a2 waits behind the dead message of its key
    assert len(sent) == len(set(sent))
    dead = relay.dead()
    assert [(d.id, d.topic, d.key, d.attempts) for d in dead] == [(bad, "poison", "a", 3)]
    assert "nacked" in (dead[0].last_error or "") and dead[0].dead_at is not None
    records = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(records) == 1 and bad in records[0].getMessage()
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    _run(relay, 3)
    assert sorted(broker.ids()) == sorted(sent)  # still blocked: nothing more, nothing twice
    publish_later = RecordingPublisher()
    with db_session:
        a3 = publish("t", {"n": 5}, key="a", db=db)  # a new message of the blocked key waits too
    assert Relay(db, publish_later).run_once() == 0
    assert relay.requeue([bad]) == 1
    assert relay.dead() == []
    fixed = RecordingPublisher()
    Relay(db, fixed).run_once()
    assert fixed.ids() == [bad, a2, a3]  # the key's order held
    outbox = pk.outbox.outbox_entity(db)
    with db_session:
        assert outbox.select(lambda m: m.sent_at is None).count() == 0


def test_a_broker_that_is_down_sets_nothing_aside(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    with db_session:
        ids = [publish("t", {"i": i}, key=f"k{i % 2}", db=db) for i in range(4)]
    relay = Relay(db, FailingPublisher(), max_attempts=2)
    _run(relay, 5)
    assert relay.dead() == []
    up = RecordingPublisher()
    Relay(db, up).run_once()
    assert up.ids() == ids


def test_max_attempts_none_never_sets_aside(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    with db_session:
        publish("poison", {"x": 1}, key="a", db=db)
        ok = publish("t", {"x": 2}, key="b", db=db)
    broker = RejectingPublisher()
    relay = Relay(db, broker, max_attempts=None)
    _run(relay, 4)
    assert relay.dead() == [] and broker.ids() == []  # the batch keeps failing as a whole
    with pytest.raises(OptionError, match="max_attempts"):
        Relay(db, broker, max_attempts=0)
    with pytest.raises(OptionError, match="list of message ids"):
        relay.requeue(ok)  # type: ignore[arg-type]
