"""``attach(db)``: the one set-up call that gives a Pony ``Database`` its ponykit configuration.

Everything ponykit installs is installed on one ``Database``: its converters (on that database's provider
instance), its commit/rollback interception, its keys and its cache. Two databases in one process never
see each other's keys, caches or types.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pony.orm import Database

from . import _pony
from .errors import ConfigurationError

__all__ = ["CommitEvent", "Kit", "attach", "attached_databases", "find_kit", "forget", "get_kit"]

_KIT_ATTR = "_ponykit_kit_"
_attached: weakref.WeakSet[Database] = weakref.WeakSet()
_attach_lock = threading.Lock()


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
ExecuteListener = Callable[["Database", str, Any, float, "BaseException | None"], None]


class Kit:
    """ponykit's configuration and installed hooks for one ``Database``; made by :func:`attach`.

    Attributes: ``db`` (the Database), ``keys`` (a ``ponykit.security.KeyRing`` or None), ``cache`` (a
    cache backend or None), ``reraise_callback_errors`` (default for ``on_commit(..., reraise=)``),
    ``cache_namespace`` (the name cache invalidations of this database go under; None: from the server).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.keys: Any = None
        self.cache: Any = None
        self.cache_namespace: str | None = None
        self.reraise_callback_errors = False
        self.converters: dict[type, type] = {}
        self._subscribers: list[Subscriber] = []
        self._execute_listeners: list[ExecuteListener] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # Keys and cache credentials stay out of reprs: name their types only.
        keys = type(self.keys).__name__ if self.keys is not None else None
        cache = type(self.cache).__name__ if self.cache is not None else None
        return f"<Kit for {self.db!r} keys={keys} cache={cache}>"

    # -- commit events -------------------------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(event)`` after every transaction on this Database commits with writes.

        Subscribers run right after the database confirmed the commit, in the committing thread, before
        any ``on_commit`` callback. They must be quick, must not use the database, and should not raise
        (an exception is logged and swallowed). Returns a function that unsubscribes.
        """
        with self._lock:
            self._subscribers = [*self._subscribers, subscriber]

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = [s for s in self._subscribers if s is not subscriber]

        return unsubscribe

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        """The current subscribers (a snapshot)."""
        return tuple(self._subscribers)

    # -- statements ------------------------------------------------------------------------------------

    def add_execute_listener(self, listener: ExecuteListener) -> Callable[[], None]:
        """Call ``listener(db, sql, arguments, seconds, error)`` after each statement Pony runs on ``db``.

        Covers ORM queries, flushes and raw SQL (``db.select``/``db.execute``) in every thread; ``error``
        is the exception the statement raised, or None. Listeners must be quick and must not raise.
        Returns a function that removes the listener.
        """
        with self._lock:
            self._execute_listeners = [*self._execute_listeners, listener]

        def remove() -> None:
            with self._lock:
                self._execute_listeners = [x for x in self._execute_listeners if x is not listener]

        return remove

    @property
    def execute_listeners(self) -> tuple[ExecuteListener, ...]:
        """The current statement listeners (a snapshot)."""
        return tuple(self._execute_listeners)

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


def attach(
    db: Database,
    *,
    keys: Any = None,
    cache: Any = None,
    cache_namespace: str | None = None,
    reraise_callback_errors: bool | None = None,
) -> Kit:
    """Configure ``db`` for ponykit and return its :class:`Kit`.

    Call it once, after ``db.bind(...)`` (or :func:`ponykit.bind_url`) and before
    ``db.generate_mapping(...)``::

        db = Database()
        ...entities...
        bind_url(db, "sqlite:///app.db")
        kit = attach(db, keys=KeyRing.from_env("PONYKIT_KEYS"))
        db.generate_mapping(create_tables=True)

    It installs ponykit's attribute converters and its commit/rollback interception on this Database
    only. ``keys`` is a key ring for encrypted types and signed cursors, ``cache`` a cache backend,
    ``reraise_callback_errors`` the default of ``on_commit(..., reraise=...)``. ``cache_namespace`` names the
    data for cache invalidation: every process that gives the same name (or, by default, reaches the same
    database and schema on its server) shares invalidations through a shared cache.

    A second call before ``generate_mapping`` returns the same Kit, replacing the options it is given and
    keeping the others; hooks are never installed twice. Called before ``bind`` or after
    ``generate_mapping`` it raises :class:`ConfigurationError` saying when to call it.
    """
    if not isinstance(db, Database):
        raise ConfigurationError(f"attach() takes a pony.orm.Database, got {type(db).__name__}")
    if not _pony.is_bound(db):
        raise ConfigurationError(
            "attach(db) was called before the Database was bound: call bind_url(db, url) (or db.bind(...)) "
            "first, then attach(db), then db.generate_mapping()"
        )
    if _pony.is_mapped(db):
        raise ConfigurationError(
            "attach(db) was called after db.generate_mapping(): ponykit must install its converters before "
            "the mapping is built; call attach(db) right after binding and before generate_mapping()"
        )
    with _attach_lock:
        kit: Kit | None = db.__dict__.get(_KIT_ATTR)
        if kit is None:
            kit = Kit(db)
            _install(kit)
            setattr(db, _KIT_ATTR, kit)
            _attached.add(db)
    if keys is not None:
        kit.keys = keys
    if cache is not None:
        kit.cache = cache
    if cache_namespace is not None:
        if not isinstance(cache_namespace, str) or not cache_namespace:
            raise ConfigurationError(
                f"attach(cache_namespace=...) takes a non-empty str naming the database's data, got "
                f"{cache_namespace!r}"
            )
        kit.cache_namespace = cache_namespace
    if reraise_callback_errors is not None:
        kit.reraise_callback_errors = reraise_callback_errors
    for hook in _attach_hooks:
        hook(kit)
    return kit


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


# Other modules add set-up steps (converters of built-in types, logging filters ...) without kit.py
# importing them: each registers a function called with the Kit on every attach().
_attach_hooks: list[Callable[[Kit], None]] = []


def add_attach_hook(hook: Callable[[Kit], None]) -> None:
    """Run ``hook(kit)`` at every ``attach()`` (internal extension point for ponykit's own modules)."""
    if hook not in _attach_hooks:
        _attach_hooks.append(hook)


def _install(kit: Kit) -> None:
    # Imported here: transactions imports kit for get_kit, and the hooks belong to the first attach.
    from . import transactions

    transactions._install(kit)
    note = transactions._note_statement
    _pony.wrap_provider_method(kit.db, "execute", functools.partial(_wrap_execute, kit, note))
    # Schema-per-tenant through search_path: Pony's create_tables looks in "public" (issue #12 item 21).
    _pony.look_in_current_schema(kit.db)


def _wrap_execute(
    kit: Kit, note: Callable[[Database, str], None], original: Callable[..., Any]
) -> Callable[..., Any]:
    db = kit.db

    def execute(cursor: Any, sql: str, arguments: Any = None, returning_id: bool = False) -> Any:
        listeners = kit._execute_listeners
        if not listeners:
            result = original(cursor, sql, arguments, returning_id)
            note(db, sql)  # the transaction wrote: losing its connection now would lose work
            return result
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            result = original(cursor, sql, arguments, returning_id)
            note(db, sql)
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            elapsed = time.perf_counter() - start
            for listener in listeners:
                try:
                    listener(db, sql, arguments, elapsed, error)
                except Exception:
                    logging.getLogger("ponykit").exception("ponykit: execute listener %r raised", listener)

    return execute
