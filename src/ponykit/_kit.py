"""The Kit: everything ponykit keeps for one attached ``Database``, and how to find it.

This module holds data only: the :class:`Kit` record, :class:`CommitEvent` and the lookups
(:func:`get_kit`, :func:`find_kit`, :func:`attached_databases`, :func:`forget`). It imports nothing of
ponykit but ``errors`` and ``_pony``, so every subsystem can reach the Kit of a Database without importing
the subsystems above it. ``ponykit.kit.attach()`` makes the Kit and runs the installers that fill it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pony.orm import Database

from . import _pony
from .errors import ConfigurationError

if TYPE_CHECKING:  # the field types only: importing them would go upward (security, query)
    from .query.backends import CacheBackend
    from .security.keys import KeyRing

__all__ = [
    "CommitEvent",
    "ExecuteListener",
    "Kit",
    "StatementListener",
    "Subscriber",
    "attached_databases",
    "find_kit",
    "forget",
    "get_kit",
    "register",
]

_KIT_ATTR = "_ponykit_kit_"
_attached: weakref.WeakSet[Database] = weakref.WeakSet()


@dataclass(frozen=True)
class CommitEvent:
    """What one committed transaction wrote on one Database.

    ``writes`` maps entity names to the primary keys written (scalars, or tuples for composite keys), or
    to ``None`` when the keys are unknown and any row of that entity may have changed (a bulk delete by
    query, a many-to-many link change seen from the other side). A write to a subclass is reported under
    the subclass and every entity it inherits from, since queries on the base class see its rows.
    """

    db: Database
    writes: Mapping[str, frozenset[Any] | None]


Subscriber = Callable[[CommitEvent], None]
ExecuteListener = Callable[[Database, str, Any, float, "BaseException | None"], None]
#: ``(db, cursor, sql, arguments, seconds, error)``: an :data:`ExecuteListener` that also gets the DB-API
#: cursor the statement ran on (its ``rowcount``, its connection), in the thread that ran it.
StatementListener = Callable[[Database, Any, str, Any, float, "BaseException | None"], None]

_T = TypeVar("_T")


class Kit:
    """ponykit's configuration and installed hooks for one ``Database``; made by :func:`ponykit.attach`.

    Attributes: ``db`` (the Database), ``keys`` (a :class:`~ponykit.security.KeyRing` or None), ``cache``
    (a :class:`~ponykit.query.CacheBackend` or None), ``reraise_callback_errors`` (default for
    ``on_commit(..., reraise=)``), ``slow_query_ms`` (the slow-query log's threshold, None when off),
    ``cache_namespace`` (the name cache invalidations of this database go
    under; None: from the server), ``converters`` (declared type -> Pony converter class on this
    Database), ``param_encoders`` (value type -> ``AttributeType`` encoding query parameters),
    ``cache_state`` (the query cache's bookkeeping, made on first use), ``installed`` (the names of the
    installers ``attach()`` has run, in order), ``refresh_types`` (re-installs the converters after a
    late ``register_type()``), ``rls_required`` (the PostgreSQL settings every statement needs, see
    ``ponykit.security.rls``).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.keys: KeyRing | None = None
        self.cache: CacheBackend | None = None
        self.cache_namespace: str | None = None
        self.reraise_callback_errors = False
        self.slow_query_ms: float | None = None  # the slow-query log's threshold; None: off
        # False drops on_commit callbacks when registered (ponykit.testing's ponykit_run_on_commit = false).
        self.run_commit_callbacks = True
        self.converters: dict[type, type] = {}
        self.param_encoders: dict[type, Any] = {}
        self.cache_state: Any = None  # a ponykit.query._generations.DbState once the cache is used
        self.installed: tuple[str, ...] = ()
        # Set by the types installer: installs the converters of types registered after attach().
        self.refresh_types: Callable[[], None] | None = None
        # Read without the lock on every statement and commit: replaced (copy on write), never mutated.
        self._subscribers: tuple[Subscriber, ...] = ()
        self._execute_listeners: tuple[ExecuteListener, ...] = ()
        self._statement_listeners: tuple[StatementListener, ...] = ()
        self._lock = threading.Lock()
        # Row-level security (ponykit.security.rls): the settings every statement needs (fail closed),
        # and the hook its installer sets on PostgreSQL: called with (cursor, sql, arguments) before each
        # statement, it returns the SQL to send (the statement, maybe with the settings in front).
        self.rls_required: tuple[str, ...] = ()
        self.before_statement: Callable[[Any, str, Any], str] | None = None
        # Set by the transactions installer: given a session cache, whether its transaction has written
        # (a write statement, a flush, a reported bulk write). The replica router pins only commits that
        # did; None (not installed): every commit counts as a write.
        self.transaction_wrote: Callable[[Any], bool] | None = None

    def __repr__(self) -> str:
        # Keys and cache credentials stay out of reprs: name their types only.
        keys = type(self.keys).__name__ if self.keys is not None else None
        cache = type(self.cache).__name__ if self.cache is not None else None
        return f"<Kit for {self.db!r} keys={keys} cache={cache}>"

    def _add(self, field: str, item: _T) -> Callable[[], None]:
        """Append ``item`` to the tuple in ``field`` (copy on write); return the function removing it."""
        with self._lock:
            setattr(self, field, (*getattr(self, field), item))

        def remove() -> None:
            with self._lock:
                setattr(self, field, tuple(x for x in getattr(self, field) if x is not item))

        return remove

    # -- commit events -------------------------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(event)`` after every transaction on this Database commits with writes.

        Subscribers run right after the database confirmed the commit, in the committing thread, before
        any ``on_commit`` callback. They must be quick, must not use the database, and should not raise
        (an exception is logged and swallowed). Returns a function that unsubscribes.
        """
        return self._add("_subscribers", subscriber)

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        """The current subscribers (a snapshot)."""
        return self._subscribers

    # -- statements ------------------------------------------------------------------------------------

    def add_execute_listener(self, listener: ExecuteListener) -> Callable[[], None]:
        """Call ``listener(db, sql, arguments, seconds, error)`` after each statement Pony runs on ``db``.

        Covers ORM queries, flushes and raw SQL (``db.select``/``db.execute``) in every thread; ``error``
        is the exception the statement raised, or None. Listeners must be quick and must not raise.
        Returns a function that removes the listener.
        """
        return self._add("_execute_listeners", listener)

    @property
    def execute_listeners(self) -> tuple[ExecuteListener, ...]:
        """The current statement listeners (a snapshot)."""
        return self._execute_listeners

    def add_statement_listener(self, listener: StatementListener) -> Callable[[], None]:
        """Call ``listener(db, cursor, sql, arguments, seconds, error)`` after each statement on ``db``.

        Like :meth:`add_execute_listener`, with the DB-API cursor the statement ran on: its ``rowcount``,
        and its connection for a follow-up statement that must not pass through Pony (an EXPLAIN). The
        listener must not fetch from the cursor (Pony has not read the rows yet), must be quick and must
        not raise. Returns a function that removes the listener.
        """
        return self._add("_statement_listeners", listener)

    # -- converters ----------------------------------------------------------------------------------

    def register_converter(self, py_type: type, converter: type) -> None:
        """Map ``py_type`` attributes of this Database through ``converter`` (a Pony ``Converter`` class).

        Must happen before ``generate_mapping``; the converter applies to this Database only.
        """
        if _pony.is_mapped(self.db):
            raise ConfigurationError(
                f"cannot register a converter for {py_type.__name__} on {self.db!r}: the mapping is already "
                "generated; register types before db.generate_mapping()"
            )
        self.converters[py_type] = converter
        _pony.install_converters(self.db, list(self.converters.items()))


def register(kit: Kit) -> None:
    """Hang ``kit`` on its Database and count the Database as attached (called by ``attach()`` only)."""
    setattr(kit.db, _KIT_ATTR, kit)
    _attached.add(kit.db)


def get_kit(db: Database) -> Kit:
    """The :class:`Kit` of an attached Database; raises ConfigurationError if it was never attached."""
    kit: Kit | None = db.__dict__.get(_KIT_ATTR) if isinstance(db, Database) else None
    if kit is None:
        raise ConfigurationError(
            f"{db!r} is not attached to ponykit: call ponykit.attach(db) after binding it and before "
            "db.generate_mapping()"
        )
    return kit


def find_kit(db: Database) -> Kit | None:
    """The Kit of ``db``, or None if it is not attached."""
    return db.__dict__.get(_KIT_ATTR)  # type: ignore[no-any-return]


def forget(db: Database) -> None:
    """Leave ``db`` out of the Databases ``on_commit()`` chooses from when it is given no ``db=``.

    For test suites that make a fresh Database per test: the previous test's Database may stay alive
    until garbage collection and would make the choice ambiguous. Its hooks stay installed.
    """
    _attached.discard(db)


def attached_databases() -> list[Database]:
    """Every attached Database still alive in this process."""
    return list(_attached)
