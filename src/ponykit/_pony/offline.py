"""Mapping a Database without a server, or on a connection someone else owns (the migrations' door).

Pony computes every table, column, index and constraint name and every SQL type in
``generate_mapping()``; it needs a provider for that, not a server. :func:`map_offline` binds a
throwaway Database to a provider subclass whose connection is a stub (the trick of Pony's own tests,
``pony/orm/tests/testutils.py``), so its ``DBSchema`` and DDL are those a connected run would produce.
:func:`bind_to_connection` binds a Database to one live DB-API connection whose transaction belongs to
the caller (a migration's historical models): Pony's commit and rollback on it do nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from pony.orm import Database

__all__ = ["DIALECTS", "bind_to_connection", "map_offline", "offline_bind"]

DIALECTS = ("sqlite", "postgres", "mysql")

# What inspect_connection() would have read from a server: the version decides little DDL (PostgreSQL's
# IF NOT EXISTS, MySQL's fractional-second precision), so a current one is assumed unless told.
_DEFAULT_VERSIONS: dict[str, Any] = {"postgres": 150000, "mysql": (10, 11, 0)}


class _StubCursor:
    description = None
    rowcount = 0
    lastrowid = None

    def execute(self, sql: str, args: Any = None) -> None:
        raise RuntimeError(f"an offline Database cannot run SQL: {sql[:80]!r}")

    def fetchone(self) -> None:
        return None

    def fetchall(self) -> list[Any]:
        return []

    def close(self) -> None:
        pass


class _StubConnection:
    autocommit = True

    def cursor(self) -> _StubCursor:
        return _StubCursor()

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass


class _OnePool:
    """A ``pony_pool_mockup``: hands out one connection; ``Database.disconnect()`` calls ``on_disconnect``
    (the lender's way to close it), else the connection is never closed here."""

    def __init__(self, connection: Any, on_disconnect: Callable[[], None] | None = None) -> None:
        self.connection = connection
        self.on_disconnect = on_disconnect

    def connect(self) -> tuple[Any, bool]:
        return self.connection, False

    def release(self, connection: Any) -> None:
        pass

    def drop(self, connection: Any) -> None:
        pass

    def disconnect(self) -> None:
        if self.on_disconnect is not None:
            self.on_disconnect()


def _provider_class(dialect: str, server_version: Any, inspect: bool) -> type:
    base = importlib.import_module(f"pony.orm.dbproviders.{dialect}").provider_cls
    namespace: dict[str, Any] = {}
    if not inspect:
        version = server_version if server_version is not None else _DEFAULT_VERSIONS[dialect]
        namespace = {"inspect_connection": lambda self, connection: None, "server_version": version}
        if dialect == "mysql":
            namespace["max_time_precision"] = 6 if tuple(version) >= (5, 6, 4) else 0
            namespace["default_schema_name"] = None
        if dialect == "postgres":
            namespace["table_if_not_exists_syntax"] = version >= 90100
    return type(f"Offline{base.__name__}", (base,), namespace)


def offline_bind(db: Database, dialect: str, server_version: Any = None) -> None:
    """Bind ``db`` for ``dialect`` without a server (SQLite: an in-memory database)."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}: expected one of {', '.join(DIALECTS)}")
    if dialect == "sqlite":
        db.bind("sqlite", ":memory:")
        return
    provider = _provider_class(dialect, server_version, inspect=False)
    db.bind(provider, pony_pool_mockup=_OnePool(_StubConnection()))


def map_offline(db: Database, dialect: str, server_version: Any = None) -> None:
    """Bind ``db`` offline and map its entities: ``db.schema`` then holds Pony's DDL for ``dialect``."""
    offline_bind(db, dialect, server_version)
    db.generate_mapping(create_tables=False, check_tables=False)


class _BorrowedConnection:
    """A live connection lent to Pony: the lender owns its transaction, so commit/rollback do nothing."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_connection":
            object.__setattr__(self, name, value)
        elif name == "autocommit":
            pass  # Pony switches PostgreSQL connections out of autocommit; the lender decides
        else:
            setattr(self._connection, name, value)


def bind_to_connection(
    db: Database, dialect: str, connection: Any, on_disconnect: Callable[[], None] | None = None
) -> None:
    """Bind ``db`` to one live DB-API ``connection`` (its transaction stays the caller's) and map it.

    Pony inspects the connection as it would its own (server version, MySQL's schema name).
    ``on_disconnect`` runs on ``db.disconnect()`` (the lender closes its connection there).
    """
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}: expected one of {', '.join(DIALECTS)}")
    borrowed = _BorrowedConnection(connection)
    if dialect == "sqlite":
        provider: Any = importlib.import_module("pony.orm.dbproviders.sqlite").provider_cls
        db.bind(provider, ":memory:", pony_pool_mockup=_OnePool(borrowed, on_disconnect))
    else:
        db.bind(
            _provider_class(dialect, None, inspect=True), pony_pool_mockup=_OnePool(borrowed, on_disconnect)
        )
    db.generate_mapping(create_tables=False, check_tables=False)
