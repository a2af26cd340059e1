"""enqueue_on_commit: sent after COMMIT, never for a rolled-back transaction; a Future gives the result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pony.orm import Database, db_session

from ponykit.errors import OptionError
from ponykit.outbox import enqueue_on_commit

from ._helpers import make_outbox_db


def test_sent_after_commit_and_never_for_a_rollback(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)
    sent: list[tuple[Any, ...]] = []

    def send(*args: Any, **kwargs: Any) -> str:
        sent.append((args, kwargs))
        return f"task-{len(sent)}"

    with db_session:
        db.Order(total=1)
        future = enqueue_on_commit(send, 1, x=2)
        assert sent == [] and not future.done()  # not before COMMIT
    assert sent == [((1,), {"x": 2})]
    assert future.result(timeout=0) == "task-1"

    with pytest.raises(RuntimeError), db_session:
        db.Order(total=2)
        rolled_back = enqueue_on_commit(send, 3)
        raise RuntimeError("the transaction fails")
    assert rolled_back.cancelled()
    assert len(sent) == 1

    outside = enqueue_on_commit(send, 4)  # no transaction to wait for: sent at once
    assert outside.result(timeout=0) == "task-2"


def test_a_failing_send_resolves_the_future_with_its_error(make_db: Callable[[], Database]) -> None:
    db = make_outbox_db(make_db)

    def send() -> None:
        raise ConnectionError("broker down")

    with db_session:
        db.Order(total=1)
        future = enqueue_on_commit(send)
    assert isinstance(future.exception(timeout=0), ConnectionError)


def test_celery_tasks_are_sent_with_apply_async(make_db: Callable[[], Database]) -> None:
    celery = pytest.importorskip("celery")
    app = celery.Celery("pk_outbox_test", broker="memory://", backend="cache+memory://")

    @app.task(name="orders.ship")
    def ship(order_id: int, *, express: bool = False) -> None:  # runs in a worker, never here
        raise AssertionError("not executed in tests")

    db = make_outbox_db(make_db)
    with db_session:
        db.Order(total=1)
        future = enqueue_on_commit(ship, 7, express=True)
    result = future.result(timeout=0)
    assert isinstance(result.id, str) and result.id
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue("celery")
        message = queue.get(timeout=5)
        assert message.headers["task"] == "orders.ship"
        assert message.headers["id"] == result.id
        assert message.decode()[0] == [7] and message.decode()[1] == {"express": True}
        message.ack()
        queue.close()


def test_actors_with_send_and_bad_tasks(make_db: Callable[[], Database]) -> None:
    class Actor:  # dramatiq's Actor shape: actor_name and send(*args, **kwargs) -> Message
        actor_name = "notify"

        def __init__(self) -> None:
            self.sent: list[Any] = []

        def send(self, *args: Any, **kwargs: Any) -> str:
            self.sent.append((args, kwargs))
            return "message-1"

        def __call__(self, *args: Any, **kwargs: Any) -> None:
            raise AssertionError("an actor is sent, not called")

    db = make_outbox_db(make_db)
    actor = Actor()
    with db_session:
        db.Order(total=1)
        future = enqueue_on_commit(actor, "a", n=1)
    assert actor.sent == [(("a",), {"n": 1})] and future.result(timeout=0) == "message-1"
    with pytest.raises(OptionError, match="Celery task"):
        enqueue_on_commit(42)


def test_a_rolled_back_savepoint_cancels_its_sends(make_db: Callable[[], Database]) -> None:
    import ponykit as pk

    db = make_outbox_db(make_db)
    sent: list[str] = []
    with db_session:
        db.Order(total=1)
        with pytest.raises(RuntimeError), pk.savepoint():
            inner = enqueue_on_commit(sent.append, "inner")
            raise RuntimeError("the inner step fails")
        outer = enqueue_on_commit(sent.append, "outer")
    assert inner.cancelled() and outer.done() and sent == ["outer"]
