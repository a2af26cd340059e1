"""Row-level security on PostgreSQL: what ``ponykit.security.rls`` needs of Pony's session and provider.

Pony runs read-only sessions on PostgreSQL in autocommit (``set_transaction_mode``), so a
transaction-local ``set_config(name, value, true)`` would be gone by the next statement. While a
security context is active, :func:`force_transaction` turns the session's connection to a real
transaction the way Pony does for a writing session (``cache.immediate``), and the settings are applied
on the driver's cursor with :func:`apply_settings` before the statement that starts it. What was applied
is remembered on the session cache (:func:`applied_settings`) until the transaction ends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pony.orm.core as _core
import pony.orm.dbapiprovider as _dbapiprovider
from pony.orm import Database

from ._typing import Entity, SessionCache
from .model import entity_attribute

__all__ = [
    "applied_settings",
    "apply_settings",
    "attr_columns",
    "entity_table",
    "force_transaction",
    "is_ddl_session",
    "remember_settings",
    "session_in_transaction",
    "settings_prefix",
]

_APPLIED_ATTR = "_ponykit_rls_applied_"


def is_ddl_session(cache: SessionCache) -> bool:
    """True if the cache belongs to a ``db_session(ddl=True)`` (``generate_mapping``'s own session)."""
    session = cache.db_session
    return bool(session is not None and session.ddl)


def session_in_transaction(cache: SessionCache) -> bool:
    """True while Pony counts the session's connection as inside a database transaction.

    False after a commit, a rollback, or a reconnect (``provider.drop`` clears it): whatever a previous
    transaction set with ``set_config(..., true)`` is gone then.
    """
    return bool(cache.in_transaction)


def force_transaction(db: Database, cache: SessionCache, connection: Any) -> None:
    """Make the statement about to run on ``connection`` open a real transaction (PostgreSQL).

    Sets the cache ``immediate``, as Pony does for a session that writes, so that Pony switches the
    connection out of autocommit at the next transaction (its own ``set_transaction_mode``) and marks
    ``in_transaction`` once this statement has run. A connection already in autocommit is switched now
    through the provider's ``set_transaction_mode`` (ponykit's wrapper of it included), as Pony would.
    """
    cache.immediate = True
    if cache.in_transaction:
        return
    if getattr(connection, "autocommit", False):
        db.provider.set_transaction_mode(connection, cache)


def _execute(provider: Any, cursor: Any, sql: str, arguments: Sequence[Any]) -> None:
    cursor.execute(sql, arguments)


# The driver's errors reach the caller as Pony's (pony.orm.OperationalError ...), like a statement's.
_run: Callable[[Any, Any, str, Sequence[Any]], None] = _dbapiprovider.wrap_dbapi_exceptions(_execute)


def apply_settings(db: Database, cursor: Any, settings: Sequence[tuple[str, str]]) -> None:
    """Run ``SELECT set_config(name, value, true), ...`` for ``settings`` on a new cursor of the
    connection of ``cursor`` (a DB-API cursor of psycopg2, or ponykit's COPY stand-in for one).

    Housekeeping: it goes to the driver directly, not through the provider's ``execute``, so no
    statement listener, query counter or Pony statistic sees it (as none sees Pony's own ``SET
    TRANSACTION``). Values are bound parameters; Pony's SQL log does not show them.
    """
    if not settings:
        return
    sql = "SELECT " + ", ".join(["set_config(%s, %s, true)"] * len(settings))
    arguments = [item for pair in settings for item in pair]
    if _core.local.debug:
        _core.log_orm("SET ROW-LEVEL SECURITY SETTINGS " + ", ".join(name for name, _ in settings))
    _run(db.provider, cursor.connection.cursor(), sql, arguments)


def settings_prefix(cursor: Any, settings: Sequence[tuple[str, str]], has_arguments: bool) -> str:
    """``SELECT set_config('name', 'value', true), ...; `` with the values quoted by the driver, to put
    before a statement sent in the same round trip. With ``has_arguments`` the statement's own
    parameters are interpolated by the driver afterwards, so ``%`` in the prefix is doubled."""
    # The statement starts on a line of its own: a PostgreSQL error quotes the line it points at
    # ("LINE 2: SELECT ..."), never the settings' values on line 1.
    sql = "SELECT " + ", ".join(["set_config(%s, %s, true)"] * len(settings)) + ";\n"
    arguments = [item for pair in settings for item in pair]
    if _core.local.debug:
        _core.log_orm("SET ROW-LEVEL SECURITY SETTINGS " + ", ".join(name for name, _ in settings))
    text = cursor.mogrify(sql, arguments)
    if isinstance(text, bytes):
        from psycopg2.extensions import encodings  # the driver's own name -> Python codec table

        text = text.decode(encodings.get(cursor.connection.encoding, "utf-8"))
    prefix = str(text)
    return prefix.replace("%", "%%") if has_arguments else prefix


def applied_settings(cache: SessionCache) -> Any:
    """What :func:`remember_settings` stored on the cache for its current transaction, or None."""
    return cache.__dict__.get(_APPLIED_ATTR)


def remember_settings(cache: SessionCache, applied: Any) -> None:
    """Store what the cache's current transaction has applied (None: nothing)."""
    cache.__dict__[_APPLIED_ATTR] = applied


def entity_table(entity: Entity) -> str | tuple[str, ...]:
    """The table of a mapped entity (its root's, for a subclass), as Pony names it."""
    table = entity._root_._table_
    if table is None:
        raise RuntimeError(f"entity {entity.__name__} is not mapped yet: call db.generate_mapping() first")
    return tuple(table) if isinstance(table, (list, tuple)) else str(table)


def attr_columns(entity: Entity, name: str) -> tuple[str, ...]:
    """The columns of attribute ``name`` of a mapped entity (a relation has one per key column)."""
    return tuple(entity_attribute(entity, name).columns)
