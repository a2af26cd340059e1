"""``inbox(db).once(message_id)``: run a consumer's handler once per message id, in its own transaction.

The id is inserted into ``ponykit_inbox`` in the handler's transaction (``INSERT ... ON CONFLICT DO
NOTHING`` / ``INSERT IGNORE`` / ``INSERT OR IGNORE``). If the insert adds the row, the message is new and
the handler runs; if the row exists, a transaction that processed this id has committed, and the handler
is skipped. The row commits with the handler's effects or rolls back with them, so a message whose
handling failed is processed again on redelivery. A concurrent delivery of the same id waits on the
first one's row lock (PostgreSQL, MariaDB) and then skips (first committed) or runs (first rolled back).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pony.orm import Database, db_session

from .. import _pony
from ..errors import OutboxError
from ._publish import db_value, utcnow
from ._sql import dialect_of
from ._table import MAX_NAME, tables_of

__all__ = ["Inbox", "Once", "inbox"]

F = TypeVar("F", bound=Callable[..., Any])


class Once:
    """``inbox(db).once(message_id)``: a context manager yielding True for a new message (False: skip it),
    and a decorator whose function runs only for a new message (a duplicate returns None)."""

    def __init__(self, box: Inbox, message_id: str | Callable[..., str]) -> None:
        self._box = box
        self._id = message_id
        self._cm: Any = None

    def __enter__(self) -> bool:
        if callable(self._id):
            raise OutboxError(
                "inbox(db).once(fn) with a function is a decorator (the function gives the message id "
                "from the handler's arguments); as a context manager pass the id: "
                "with inbox(db).once(msg.id) as new:"
            )
        self._cm = self._box._claim(self._id)
        return bool(self._cm.__enter__())

    def __exit__(self, *exc: Any) -> None:
        cm, self._cm = self._cm, None
        cm.__exit__(*exc)

    def __call__(self, fn: F) -> F:
        if not callable(fn):
            raise OutboxError(f"inbox(db).once(...) decorates a function, got {type(fn).__name__}")
        message_id = self._id
        box = self._box

        @functools.wraps(fn)
        def handler(*args: Any, **kwargs: Any) -> Any:
            mid = message_id(*args, **kwargs) if callable(message_id) else message_id
            with db_session, box._claim(mid) as new:
                return fn(*args, **kwargs) if new else None

        return handler  # type: ignore[return-value]


class Inbox:
    """The inbox of one Database (``attach(db, inbox=True)``): see :func:`inbox`."""

    def __init__(self, db: Database) -> None:
        tables = tables_of(db) if isinstance(db, Database) else None
        if tables is None or tables.inbox is None:
            shown = _pony.describe_database(db) if isinstance(db, Database) else type(db).__name__
            raise OutboxError(
                f"inbox(db) needs a Database attached with ponykit.attach(db, inbox=True) (before "
                f"db.generate_mapping()), got the {shown}"
            )
        self.db = db

    def once(self, message_id: str | Callable[..., str]) -> Once:
        """Process ``message_id`` once: ``with inbox(db).once(msg.id) as new: if new: ...``, or as a
        decorator, ``@inbox(db).once(lambda msg: msg.id)`` (the function gets the handler's arguments
        and returns the id; the handler runs in a ``db_session`` and returns None for a duplicate)."""
        if not callable(message_id):
            _check_id(message_id)
        return Once(self, message_id)

    @contextmanager
    def _claim(self, message_id: str) -> Iterator[bool]:
        _check_id(message_id)
        if not _pony.in_db_session():
            raise OutboxError(
                "inbox(db).once(message_id) is used inside the db_session of the handler's work (the id "
                "is recorded in that transaction); open the db_session first, or use it as a decorator"
            )
        dialect = dialect_of(self.db)
        cursor = _pony.execute_in_session(
            self.db, dialect.inbox_insert(), (message_id, db_value(dialect.name, utcnow()))
        )
        yield cursor.rowcount == 1


def inbox(db: Database) -> Inbox:
    """The inbox of ``db``: ``inbox(db).once(message_id)`` runs a consumer's work once per message id.

    Use it inside the handler's ``db_session``::

        with db_session:
            with inbox(db).once(message.id) as new:
                if new:
                    apply(message)

    The id is recorded in that transaction: when it commits, a redelivery of the same id is skipped
    (``new`` is False); when it rolls back (an exception), the id is not recorded and a redelivery is
    processed again. As a decorator, ``@inbox(db).once(lambda message: message.id)`` runs the handler
    in a ``db_session`` only for a new id and returns None for a duplicate.
    """
    return Inbox(db)


def _check_id(message_id: Any) -> None:
    if not isinstance(message_id, str) or not message_id or len(message_id) > MAX_NAME:
        shown = (
            f"a str of {len(message_id)} characters"
            if isinstance(message_id, str)
            else type(message_id).__name__
        )
        raise OutboxError(
            f"inbox(db).once(message_id): the id must be a non-empty str of at most {MAX_NAME} characters "
            f"(Message.id), got {shown}"
        )
