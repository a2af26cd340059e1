"""DDL for soft-deletable entities that Pony cannot declare: unique keys over live rows only, and a
PostgreSQL row-level security policy hiding soft-deleted rows.

* :func:`unique_live` declares that some attributes are unique among live rows (a deleted row's
  e-mail can be taken again); :func:`create_live_unique_indexes` creates the indexes after
  ``generate_mapping`` (or :func:`live_unique_sql` gives the DDL for a migration):

  - PostgreSQL and SQLite: a partial unique index ``... WHERE deleted_at IS NULL``;
  - MariaDB/MySQL (no partial indexes): one stored generated column per key column,
    ``live_<column> = IF(deleted_at IS NULL, <column>, NULL)``, and a unique index over them (NULLs
    never clash in a unique index, so deleted rows never do).

* :func:`soft_delete_policy_sql` gives the PostgreSQL DDL of a policy under which no read path of a
  role subject to row-level security (``select``, ``get``, ``Entity[pk]``, ``Set`` loads, raw SQL)
  sees a soft-deleted row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pony.orm import Database, db_session, flush

from .. import _pony
from .._sql import Dialect, dialect_of
from ..errors import ConfigurationError, UnsupportedDatabase

__all__ = [
    "SHOW_DELETED_SETTING",
    "create_live_unique_indexes",
    "live_unique_sql",
    "showing_deleted",
    "soft_delete_policy_sql",
    "unique_live",
]

#: The PostgreSQL setting that lets a session see (and so soft-delete or restore) the rows the policy of
#: :func:`soft_delete_policy_sql` hides; :func:`showing_deleted` sets it.
SHOW_DELETED_SETTING = "ponykit.show_deleted"

_MAX_NAME = 63  # PostgreSQL's identifier limit (MariaDB's is 64)


def unique_live(entity: Any, *attrs: str, name: str | None = None) -> None:
    """Declare ``attrs`` of a :class:`~ponykit.mixins.SoftDeletable` entity unique among its live rows.

    Call it after the class is declared (before or after ``generate_mapping``); the index is made by
    :func:`create_live_unique_indexes`. Do not also declare the attributes ``unique=True``: that
    index would count deleted rows too. ``name`` is the index name (default: derived from the table
    and the attributes).
    """
    if getattr(entity, "_ponykit_soft_delete_", None) is None:
        raise ConfigurationError(
            f"unique_live({entity.__name__}, ...): {entity.__name__} is not SoftDeletable; add the "
            "ponykit.mixins.SoftDeletable mixin to the class, or declare the key with unique=True"
        )
    if not attrs:
        raise ConfigurationError(f"unique_live({entity.__name__}): name at least one attribute")
    for attr in attrs:
        if _pony.find_attribute(entity, attr) is None:
            raise ConfigurationError(
                f"unique_live({entity.__name__}, ...): {entity.__name__} has no attribute {attr!r}; name "
                "attributes declared on the entity"
            )
    declared: list[tuple[tuple[str, ...], str | None]] = list(
        entity.__dict__.get("_ponykit_live_unique_", ())
    )
    if all(tuple(attrs) != a for a, _ in declared):
        declared.append((tuple(attrs), name))
    entity._ponykit_live_unique_ = declared


def live_unique_sql(entity: Any) -> list[str]:
    """The DDL of the live-unique keys declared on ``entity`` (and its bases) with :func:`unique_live`,
    for its database (a mapped entity). Each statement does nothing if its index already exists."""
    db = _pony.database_of(entity)
    dialect = dialect_of(db)
    info = _pony.entity_info(entity)
    deleted = _column(entity, entity._ponykit_soft_delete_)
    statements: list[str] = []
    for klass in reversed(entity.__mro__):
        for attrs, name in klass.__dict__.get("_ponykit_live_unique_", ()):
            columns = [c for a in attrs for c in _pony.attr_info(_pony.entity_attribute(entity, a)).columns]
            index = name or _name("ux_live", info.table, columns)
            statements.extend(_index_sql(dialect, entity, info.table, columns, deleted, index))
    return statements


def _index_sql(
    dialect: Dialect, entity: Any, table: Any, columns: list[str], deleted: str, index: str
) -> list[str]:
    q = dialect.q
    if dialect.name in ("postgres", "sqlite"):
        cols = ", ".join(q(c) for c in columns)
        return [
            f"CREATE UNIQUE INDEX IF NOT EXISTS {q(index)} ON {q(table)} ({cols}) WHERE {q(deleted)} IS NULL"
        ]
    types = _pony.column_sql_types(entity)
    statements = []
    generated = []
    for column in columns:
        live = _name("live", column, [])
        generated.append(live)
        statements.append(
            f"ALTER TABLE {q(table)} ADD COLUMN IF NOT EXISTS {q(live)} {types[column]} "
            f"AS (IF({q(deleted)} IS NULL, {q(column)}, NULL)) PERSISTENT"
        )
    cols = ", ".join(q(c) for c in generated)
    statements.append(f"CREATE UNIQUE INDEX IF NOT EXISTS {q(index)} ON {q(table)} ({cols})")
    return statements


def create_live_unique_indexes(db: Database) -> int:
    """Create the live-unique indexes declared with :func:`unique_live` on the entities of ``db`` (after
    ``generate_mapping``); the number of statements run. Safe to call at every start."""
    count = 0
    with db_session:
        for entity in _pony.entities_of(db).values():
            if "_ponykit_live_unique_" not in entity.__dict__:
                continue  # a subclass shares its root's table: its keys are made with the root's
            for sql in live_unique_sql(entity):
                _pony.execute_in_session(db, sql, ())
                count += 1
    return count


def soft_delete_policy_sql(
    entity: Any, *, permissive: bool = True, force: bool = True, escape: bool = True
) -> list[str]:
    """PostgreSQL DDL that hides the soft-deleted rows of ``entity`` (a mapped SoftDeletable entity) from
    every read of a role subject to row-level security: ``select``, ``get``, ``Entity[pk]``, ``Set``
    loads and raw SQL alike.

    The statements enable (and with ``force``, force: the table's owner too) row-level security on the
    table and add a RESTRICTIVE ``FOR SELECT`` policy ``USING (deleted_at IS NULL ...)``. A restrictive
    policy only narrows what permissive policies allow, so with ``permissive=True`` (the default) a
    permissive policy letting every row through is added too; pass ``permissive=False`` when the table
    has its own policies (``ponykit.security.enable_rls``). Run the statements once, as the table's
    owner (a migration).

    PostgreSQL requires the row an UPDATE writes to stay visible, so soft-deleting a row is itself
    refused under the policy. With ``escape=True`` (the default) the policy lets a session that set
    :data:`SHOW_DELETED_SETTING` see the deleted rows: soft-delete and restore inside
    ``with showing_deleted(db):``. Any session may set it, so the policy then guards against reads that
    forget ``live()`` (relation loads above all), not against code that runs its own SQL. With
    ``escape=False`` only a role that bypasses row-level security (superusers, ``BYPASSRLS``, the owner
    without ``force``) can soft-delete, restore or see deleted rows.
    """
    db = _pony.database_of(entity)
    if _pony.dialect(db) != "postgres":
        raise UnsupportedDatabase(
            f"soft_delete_policy_sql({entity.__name__}): row-level security is a PostgreSQL feature; on "
            f"{_pony.dialect(db)} query through {entity.__name__}.live()"
        )
    if getattr(entity, "_ponykit_soft_delete_", None) is None:
        raise ConfigurationError(
            f"soft_delete_policy_sql({entity.__name__}): {entity.__name__} is not SoftDeletable; add the "
            "ponykit.mixins.SoftDeletable mixin"
        )
    q = dialect_of(db).q
    table = _pony.entity_info(entity).table
    deleted = _column(entity, entity._ponykit_soft_delete_)
    statements = [f"ALTER TABLE {q(table)} ENABLE ROW LEVEL SECURITY"]
    if force:
        statements.append(f"ALTER TABLE {q(table)} FORCE ROW LEVEL SECURITY")
    if permissive:
        statements.append(
            f"CREATE POLICY {q(_name('ponykit_rows', table, []))} ON {q(table)} AS PERMISSIVE FOR ALL "
            "USING (true) WITH CHECK (true)"
        )
    condition = f"{q(deleted)} IS NULL"
    if escape:
        condition += f" OR current_setting('{SHOW_DELETED_SETTING}', true) = 'on'"
    statements.append(
        f"CREATE POLICY {q(_name('ponykit_live', table, []))} ON {q(table)} AS RESTRICTIVE FOR SELECT "
        f"USING ({condition})"
    )
    return statements


@contextmanager
def showing_deleted(db: Database) -> Iterator[None]:
    """Inside a ``db_session`` on PostgreSQL: the rows the soft-delete policy hides are visible, so
    ``obj.soft_delete()``, ``obj.restore()`` and ``bulk_delete(..., soft=True)`` work; the session's
    changes are flushed before the block ends, and the session's cached query results are dropped at
    both ends (they depend on what is visible). Objects loaded in the block stay in the session. On
    other databases (no policy) it changes nothing."""
    if _pony.dialect(db) != "postgres":
        yield
        return
    # Session-level (not transaction-local): Pony may run a session's first reads in autocommit mode.
    flush()
    _pony.execute_in_session(db, f"SELECT set_config('{SHOW_DELETED_SETTING}', 'on', false)", ())
    _pony.query_results_clear(db)
    try:
        yield
        flush()
    finally:
        _pony.execute_in_session(db, f"SELECT set_config('{SHOW_DELETED_SETTING}', 'off', false)", ())
        _pony.query_results_clear(db)


def _column(entity: Any, attr: str) -> str:
    return _pony.attr_info(_pony.entity_attribute(entity, attr)).columns[0]


def _name(prefix: str, table: Any, columns: list[str]) -> str:
    """``prefix_table_cols``, shortened with a stable hash to the identifier limit."""
    base = table[-1] if isinstance(table, tuple) else str(table)
    name = "_".join([prefix, base, *columns]).lower()
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: _MAX_NAME - 11]}_{digest}"
