"""Database state, sessions, provider interception and converter lists."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pony.orm.core as _core
from pony.orm import Database

from ._typing import SessionCache

__all__ = [
    "connect_session",
    "connected_caches",
    "converter_base",
    "converter_class_for",
    "dialect",
    "in_db_session",
    "install_converters",
    "is_alive",
    "is_bound",
    "is_in_transaction",
    "is_mapped",
    "is_provider_method_wrapped",
    "look_in_current_schema",
    "max_params",
    "outside_session",
    "paramstyle",
    "quote_name",
    "release_idle_caches",
    "require_session_cache",
    "session_cache",
    "session_databases",
    "session_depth",
    "supports_insert_returning",
    "wrap_provider_method",
]


def is_bound(db: Database) -> bool:
    """True once ``db.bind(...)`` has succeeded."""
    return db.provider is not None


def is_mapped(db: Database) -> bool:
    """True once ``db.generate_mapping(...)`` has run."""
    return db.schema is not None


def dialect(db: Database) -> str:
    """The backend family: ``'sqlite'``, ``'postgres'``, ``'mysql'``, ``'cockroach'`` or ``'oracle'``."""
    provider = db.provider
    name = db.provider_name
    if name in ("sqlite", "postgres", "mysql", "cockroach", "oracle"):
        return str(name)
    return {"SQLite": "sqlite", "PostgreSQL": "postgres", "MySQL": "mysql", "Oracle": "oracle"}[
        provider.dialect
    ]


def supports_insert_returning(db: Database) -> bool:
    """True if ``INSERT ... RETURNING`` works here: PostgreSQL, SQLite >= 3.35, MariaDB >= 10.5.

    MySQL has no RETURNING. Its versions went from 5.7 to 8 and 9, while MariaDB's started at 10, so a
    MySQL-family server reporting 10.5 or later is a MariaDB with RETURNING.
    """
    family = dialect(db)
    if family == "sqlite":
        return sqlite3.sqlite_version_info >= (3, 35)
    if family == "mysql":
        return tuple(db.provider.server_version) >= (10, 5)
    return family in ("postgres", "cockroach")


def max_params(db: Database) -> int:
    """How many bound parameters one statement may carry on this backend."""
    return int(db.provider.max_params_count)


def paramstyle(db: Database) -> str:
    """The DB-API paramstyle of the driver: ``qmark``, ``format``, ``pyformat`` or ``named``."""
    return str(db.provider.paramstyle)


def quote_name(db: Database, name: str | tuple[str, ...]) -> str:
    """Quote a table or column name (or a ``(schema, table)`` pair) the way Pony does."""
    return str(db.provider.quote_name(name))


# ---------------------------------------------------------------------------------------------------------
# Sessions


def session_cache(db: Database) -> SessionCache | None:
    """The current thread's session cache for ``db``, or None if this session has not touched ``db`` yet."""
    return _core.local.db2cache.get(db)


def session_databases() -> list[Database]:
    """The Databases the current thread's session has touched so far."""
    return list(_core.local.db2cache)


def require_session_cache(db: Database) -> SessionCache:
    """The current thread's session cache for ``db``, created if needed; raises outside a db_session."""
    return db._get_cache()


def connect_session(db: Database) -> SessionCache:
    """Make sure the current session holds a connection to ``db`` and return its cache.

    A cache without a connection is closed by Pony without calling the provider at all; ponykit needs
    the provider's commit/rollback/release calls to see the session end, so it connects first.
    """
    cache = db._get_cache()
    if cache.connection is None:
        cache.prepare_connection_for_query_execution()
    return cache


def in_db_session() -> bool:
    """True inside a ``db_session`` (at any nesting depth)."""
    return _core.local.db_session is not None


def session_depth() -> int:
    """How many ``db_session`` blocks are open in this thread (0 while the outermost one is exiting)."""
    return int(_core.local.db_context_counter)


def is_in_transaction(cache: SessionCache) -> bool:
    """True while the cache's connection has an open database transaction."""
    return bool(cache.in_transaction)


def is_alive(cache: SessionCache) -> bool:
    """False once Pony has closed the cache (after commit-and-release or rollback)."""
    return bool(cache.is_alive)


def connected_caches() -> list[SessionCache]:
    """The session caches of this thread that still hold a connection."""
    return [c for c in _core.local.db2cache.values() if c.connection is not None]


def release_idle_caches() -> None:
    """Close this thread's session caches that never connected (pure bookkeeping, no SQL)."""
    for cache in list(_core.local.db2cache.values()):
        if cache.connection is None:
            cache.release()


@contextmanager
def outside_session() -> Iterator[None]:
    """Run a block as if no db_session were open in this thread, then restore the session state.

    Used to run on_commit callbacks while Pony is still unwinding the outermost ``db_session``: the
    callbacks may open their own ``db_session`` and must not join (or trip the assertions of) the one
    that is ending. Caches of the ending session that are not released yet are hidden and put back.
    """
    local = _core.local
    saved_session, saved_counter = local.db_session, local.db_context_counter
    saved_caches = dict(local.db2cache)
    local.db_session, local.db_context_counter = None, 0
    local.db2cache.clear()
    try:
        yield
    finally:
        # Callbacks open and close their own sessions, so nothing of theirs is left; restore ours.
        local.db2cache.clear()
        local.db2cache.update(saved_caches)
        local.db_session, local.db_context_counter = saved_session, saved_counter


# ---------------------------------------------------------------------------------------------------------
# Provider interception, per provider instance


_WRAPPED = "_ponykit_wrapped_"


def wrap_provider_method(
    db: Database, name: str, make_wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Replace ``db.provider.<name>`` on this provider instance with ``make_wrapper(original)``.

    The class attribute is untouched, so other Databases (even of the same dialect) are unaffected.
    Wrapping the same method twice raises, so a second ``attach`` can never stack hooks.
    """
    provider = db.provider
    if name in vars(provider) and getattr(vars(provider)[name], _WRAPPED, False):
        raise RuntimeError(f"provider.{name} of {db!r} is already wrapped by ponykit")
    original = getattr(provider, name)
    wrapper = functools.wraps(original)(make_wrapper(original))
    setattr(wrapper, _WRAPPED, True)
    setattr(provider, name, wrapper)


_SCHEMA_METHODS = ("table_exists", "index_exists", "fk_exists")


def look_in_current_schema(db: Database) -> None:
    """PostgreSQL: make this provider instance look for unqualified tables in ``current_schema()``.

    Pony's ``table_exists``, ``index_exists`` and ``fk_exists`` look for an unqualified name in schema
    ``public`` (``default_schema_name``), while ``CREATE TABLE`` and every query use the connection's
    ``search_path``. With ``?options=-c search_path=tenant1`` and a table of the same name in ``public``,
    ``generate_mapping(create_tables=True)`` took the public table for the tenant's, skipped creating
    it, and failed. The wrapped methods ask the connection for its ``current_schema()`` (the schema
    ``CREATE TABLE`` uses) and look there; schema-qualified names (``_table_ = ("s", "t")``) are unchanged.
    Other dialects are left alone.
    """
    if dialect(db) not in ("postgres", "cockroach"):
        return
    for name in _SCHEMA_METHODS:
        if not is_provider_method_wrapped(db, name):
            wrap_provider_method(db, name, _in_current_schema)


def _in_current_schema(original: Callable[..., Any]) -> Callable[..., Any]:
    def method(connection: Any, table_name: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(table_name, str):
            cursor = connection.cursor()
            cursor.execute("SELECT current_schema()")
            row = cursor.fetchone()
            if row and row[0]:  # None when no schema of the search_path exists: Pony's own lookup
                table_name = (row[0], table_name)
        return original(connection, table_name, *args, **kwargs)

    return method


def is_provider_method_wrapped(db: Database, name: str) -> bool:
    """True if ``db.provider.<name>`` carries a ponykit wrapper."""
    return bool(getattr(vars(db.provider).get(name), _WRAPPED, False))


# ---------------------------------------------------------------------------------------------------------
# Converters


def install_converters(db: Database, pairs: list[tuple[type, type]]) -> None:
    """Put ``(py_type, ConverterClass)`` pairs in front of this provider instance's converter list.

    Pony picks the first entry whose type ``issubclass`` matches, so ponykit's entries win over the
    dialect's own (a ``str``-based Enum would otherwise map to plain ``StrConverter``). The class-level
    list is left alone: other Databases never see these converters.
    """
    provider = db.provider
    current = list(provider.converter_classes)
    new_types = {t for t, _ in pairs}
    kept = [(t, c) for t, c in current if t not in new_types]
    provider.converter_classes = list(pairs) + kept


def converter_class_for(db: Database, py_type: type) -> type:
    """The converter class this Database's provider would use for ``py_type``."""
    return db.provider._get_converter_type_by_py_type(py_type)  # type: ignore[no-any-return]


def converter_base() -> type:
    """Pony's base ``Converter`` class, for ponykit types to subclass."""
    from pony.orm.dbapiprovider import Converter

    return Converter  # type: ignore[no-any-return]
