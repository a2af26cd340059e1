"""The provider's connection pool: the door for ponykit's bounded pool and the replica router.

Pony asks ``provider.pool`` for a connection when a ``db_session`` first needs one (``connect() ->
(connection, is_new)``) and hands it back when the session ends (``release(con)``: rollback, and on
PostgreSQL ``DISCARD ALL``; ``drop(con)`` after a failure: close). Its own pool keeps one connection per
thread. This module makes connections and resets them exactly as the provider's pool does, so that a
pool of ponykit's keeps Pony's semantics, and puts such a pool in place on ONE Database's provider (an
instance attribute: other Databases keep Pony's pool).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from pony.orm import Database

from ..errors import ConfigurationError
from .database import dialect

__all__ = [
    "PoolWrapper",
    "close_connection",
    "connection_factory",
    "install_pool",
    "is_in_memory_sqlite",
    "native_pool",
    "ping_connection",
    "pony_pool",
    "provider_pool",
    "reset_function",
    "run_on_connect",
]


class PoolWrapper:
    """Base of the pools ponykit puts in place of a provider's own (``original``: the pool replaced).

    Attributes ponykit reads of a pool (``dbapi_module``, ``args``, ``kwargs``, ``filename`` ...) come
    from the provider's own pool, which keeps them.
    """

    original: Any

    def __getattr__(self, name: str) -> Any:
        if name == "original":  # not set yet (half-built object): no recursion into __getattr__
            raise AttributeError(name)
        return getattr(self.original, name)


def provider_pool(db: Database) -> Any:
    """The pool ``db``'s provider takes connections from now (Pony's own, or one ponykit put there)."""
    return db.provider.pool


def pony_pool(db: Database) -> Any:
    """The pool the provider of ``db`` made itself, under any pool ponykit put in front of it."""
    pool = db.provider.pool
    while isinstance(pool, PoolWrapper) or type(pool).__name__ == "OuterPool":
        pool = pool.original
    return pool


def is_in_memory_sqlite(db: Database) -> bool:
    """True for a SQLite Database in memory (``:memory:`` is one database per connection)."""
    pool = pony_pool(db)
    if dialect(db) != "sqlite":
        return False
    filename = str(getattr(pool, "filename", ""))
    return (
        bool(getattr(pool, "is_shared_memory_db", False))
        or filename == ":memory:"
        or "mode=memory" in filename
    )


def connection_factory(db: Database, kwargs: dict[str, Any] | None = None) -> Callable[[], Any]:
    """A function opening a new DB-API connection as the provider's pool opens its own (Pony's SQL
    functions and pragmas on SQLite, the client encoding on PostgreSQL, Pony's conversions on MySQL).

    ``kwargs`` replace the driver's connection arguments (another server of the same kind: a replica);
    by default the Database's own are used. The connections are usable from any thread (SQLite's
    ``check_same_thread`` is off) and owned by the caller.
    """
    pool = pony_pool(db)
    cls = type(pool)
    if dialect(db) == "sqlite":
        sqlite_kwargs = {**(pool.kwargs if kwargs is None else kwargs), "check_same_thread": False}

        def make() -> Any:
            return cls(pool.is_shared_memory_db, pool.filename, pool.create_db, **sqlite_kwargs)

    else:
        args = pool.args if kwargs is None else ()
        connect_kwargs = dict(pool.kwargs if kwargs is None else kwargs)

        def make() -> Any:
            return cls(pool.dbapi_module, *args, **connect_kwargs)

    def connect() -> Any:
        fresh = make()
        fresh._connect()
        con = fresh.con
        fresh.con = None
        return con

    return connect


def native_pool(db: Database, kwargs: dict[str, Any]) -> Any:
    """A pool of Pony's own kind (one connection per thread, kept between sessions) for the connection
    arguments ``kwargs``: what a Database's provider would make for another server of the same kind.
    Install it with :func:`install_pool` or use it behind a router."""
    pool = pony_pool(db)
    if dialect(db) == "sqlite":
        return type(pool)(pool.is_shared_memory_db, pool.filename, pool.create_db, **kwargs)
    return type(pool)(pool.dbapi_module, **kwargs)


def reset_function(db: Database) -> Callable[[Any], None]:
    """A function putting a connection back to the state the provider's pool leaves it in on release:
    Pony's own ``release`` (rollback; on PostgreSQL also ``DISCARD ALL``, so no session setting such as
    an RLS variable leaks to the next session). When that fails the connection is closed and the error
    raised, as Pony's pool does."""
    pool = pony_pool(db)
    cls: Any = type(pool)
    # Pony's pools are thread-locals whose release() checks ``con is self.con``: one helper object serves
    # every thread, each thread setting its own ``con`` just before the call. A thread-local runs
    # __init__ again in each thread with the construction arguments: the pool's own (no connection made).
    if dialect(db) == "sqlite":
        helper = cls(pool.is_shared_memory_db, pool.filename, pool.create_db, **pool.kwargs)
    else:
        helper = cls(pool.dbapi_module, *pool.args, **pool.kwargs)
    release = cls.release

    def reset(con: Any) -> None:
        helper.con = con
        try:
            release(helper, con)
        finally:
            helper.con = None

    return reset


def ping_connection(db: Database, con: Any) -> bool:
    """True when ``con`` still talks to its server (one round trip; on SQLite an in-process check that
    the connection is open)."""
    name = dialect(db)
    try:
        if name == "sqlite":
            con.execute("SELECT 1").close()
            return True
        if name == "mysql":
            con.ping(False)  # COM_PING without reconnecting: a reconnect would lose Pony's settings
            return True
        if con.closed:
            return False
        # Autocommit for the probe: no BEGIN/ROLLBACK round trips, no transaction left open.
        was = con.autocommit
        con.autocommit = True
        try:
            cursor = con.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        finally:
            con.autocommit = was
        return True
    except Exception:  # noqa: BLE001 - any driver error: the connection is not usable
        return False


def run_on_connect(db: Database, con: Any) -> None:
    """Run ``db``'s ``@db.on_connect`` callbacks on the new connection ``con``, as Pony does for a new
    connection of its pool (each callback followed by a commit)."""
    db.call_on_connect(con)


def close_connection(con: Any) -> None:
    """Close ``con``, ignoring errors (it may already be dead)."""
    with contextlib.suppress(Exception):
        con.close()


_install_lock = threading.Lock()


def install_pool(db: Database, pool: PoolWrapper) -> None:
    """Put ``pool`` in place of ``db``'s provider pool (this Database only).

    Refused when a pool of ponykit's is already there (a second ``pool=``, or ponykit.testing's outer
    transaction) or for in-memory SQLite (each connection is its own database there). The connection
    Pony opened while binding, in this thread, is closed: ``pool`` makes its own.
    """
    provider = db.provider
    with _install_lock:
        current = provider.pool
        if isinstance(current, PoolWrapper) or type(current).__name__ == "OuterPool":
            raise ConfigurationError(
                f"this Database already has a replaced connection pool ({type(current).__name__}); "
                "bind it with one pool= only, and before ponykit.testing installs its test pool"
            )
        if is_in_memory_sqlite(db):
            raise ConfigurationError(
                "a bounded pool cannot serve an in-memory SQLite database: every connection would be a "
                "database of its own; use a file (sqlite:///app.db) or leave pool= out"
            )
        pool.original = current
        current.disconnect()
        provider.pool = pool
