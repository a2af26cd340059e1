"""What ``ponykit.diagnostics.explain()`` needs from Pony: the session's connection without going through
the provider, and the mapping read backwards (table and column -> entity and attribute, the indexes Pony
declared).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pony.orm import Database

from .model import entities_of, table_key
from .queries import per_database_cache

__all__ = ["TableInfo", "session_connection", "table_infos"]


def session_connection(db: Database) -> Any:
    """The DB-API connection of the current db_session for ``db``, as Pony prepares it before a query.

    Pending changes are flushed and the connection is taken from the pool if the session has none
    yet, exactly as before one of Pony's own SELECTs; no transaction is forced (on SQLite,
    ``db.get_connection()`` would take the write lock with ``BEGIN IMMEDIATE``). Raises Pony's
    ``TransactionError`` outside a db_session.
    """
    return db._get_cache().prepare_connection_for_query_execution()


@dataclass(frozen=True)
class TableInfo:
    """One table of the mapping: ``entity`` (the name of the entity owning it), ``columns`` (lower-cased
    column -> ``"Entity.attribute"``), ``indexes`` (each index's lower-cased columns, the primary key's
    and unique keys' included)."""

    entity: str
    columns: dict[str, str]
    indexes: tuple[tuple[str, ...], ...]


def _build(db: Database) -> dict[str, TableInfo]:
    found: dict[str, TableInfo] = {}
    schema = db.schema
    for entity in entities_of(db).values():
        root = entity._root_
        key = table_key(root._table_)
        info = found.get(key)
        if info is None:
            table = schema.tables.get(root._table_) if schema is not None else None
            indexes: tuple[tuple[str, ...], ...] = ()
            if table is not None:
                indexes = tuple(
                    tuple(str(column.name).lower() for column in index.columns)
                    for index in table.indexes.values()
                )
            info = found[key] = TableInfo(root.__name__, {}, indexes)
        for attr in entity._new_attrs_:
            if attr.is_collection or not attr.columns:
                continue
            for column in attr.columns:
                info.columns.setdefault(str(column).lower(), f"{entity.__name__}.{attr.name}")
    return found


def table_infos(db: Database) -> dict[str, TableInfo]:
    """Lower-cased table name -> :class:`TableInfo` for the entity tables of a mapped Database (cached:
    a mapping never changes once generated). Many-to-many link tables are not listed."""
    if db.schema is None:
        return _build(db)  # not mapped yet: nothing worth caching
    return per_database_cache(db, "explain_tables", lambda: _build(db))  # type: ignore[no-any-return]
