"""``enqueue_on_commit(task, *args, **kwargs)``: send a task to a queue after the transaction commits.

At most once: the task is sent after COMMIT, never for a rolled-back transaction, but a process that
dies (or a broker that is down) right after COMMIT loses it. Use the outbox (``publish`` + ``Relay``)
when a lost message is not acceptable; ``docs/outbox.md`` compares the two.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Any

from ..errors import OptionError
from ..transactions import on_commit, on_rollback

__all__ = ["enqueue_on_commit"]

log = logging.getLogger("ponykit.outbox")


def enqueue_on_commit(task: Any, *args: Any, **kwargs: Any) -> Future[Any]:
    """Send ``task`` with ``args``/``kwargs`` after the current transaction commits; return a Future.

    ``task`` is a Celery task (sent with ``task.apply_async(args, kwargs)``), a dramatiq actor
    (``actor.send(*args, **kwargs)``), an RQ ``queue.enqueue`` (``enqueue_on_commit(queue.enqueue, fn,
    x)``) or any callable (called as ``task(*args, **kwargs)``). The Future resolves, after the commit,
    to what the send returned (Celery's ``AsyncResult``, dramatiq's ``Message``, RQ's ``Job``: each has
    the task's id), or to the exception it raised (also logged on ``ponykit.outbox``). If the
    transaction rolls back, nothing is sent and the Future is cancelled. Outside a ``db_session`` the
    task is sent at once. The Database is the one attached Database in use (as for ``on_commit``).
    """
    send = _sender(task)
    future: Future[Any] = Future()

    def fire() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = send(*args, **kwargs)
        except BaseException as exc:
            log.error(
                "ponykit.outbox: enqueue_on_commit(%s) failed to send after commit: %s",
                _name(task),
                type(exc).__name__,
                exc_info=True,
            )
            future.set_exception(exc)
            return
        future.set_result(result)

    on_rollback(future.cancel)
    on_commit(fire)
    return future


def _sender(task: Any) -> Any:
    apply_async = getattr(task, "apply_async", None)
    if callable(apply_async):  # Celery

        def celery_send(*args: Any, **kwargs: Any) -> Any:
            return apply_async(args=args, kwargs=kwargs)

        return celery_send
    send = getattr(task, "send", None)
    if callable(send) and hasattr(task, "actor_name"):  # dramatiq
        return send
    if callable(task):
        return task
    raise OptionError(
        f"enqueue_on_commit(task, ...) takes a Celery task, a dramatiq actor, queue.enqueue or any callable, "
        f"got {type(task).__name__}"
    )


def _name(task: Any) -> str:
    return str(
        getattr(task, "name", None) or getattr(task, "actor_name", None) or getattr(task, "__name__", "task")
    )
