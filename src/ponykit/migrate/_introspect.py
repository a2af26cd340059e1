"""Reading a live database's schema back into the shape Pony's mapping has (``PhysicalSchema``).

:func:`introspect` queries the catalogs of SQLite, PostgreSQL or MariaDB through a plain DB-API connection
and spells every type, default and name the way Pony writes them in its DDL (``VARCHAR(80)``,
``DECIMAL(10, 2)``, ``TIMESTAMP(3)``, MariaDB ``int(11)`` as ``INTEGER``), so a database Pony created from a
model introspects to the same values ``physical_schema()`` gives for the model mapped offline. Names the
backend chooses (primary keys, single-column UNIQUE constraints, SQLite's foreign keys and auto-indexes) are
None, as on the model side. ``definition`` and ``create_sql`` stay empty: the live side has no Pony DDL.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ponykit._pony import PhysicalForeignKey, PhysicalIndex, PhysicalSchema, PhysicalTable

__all__ = ["DEFAULT_EXCLUDE", "introspect"]

DEFAULT_EXCLUDE: frozenset[str] = frozenset({"ponykit_migration"})


def introspect(connection: Any, dialect: str, *, exclude: Iterable[str] = DEFAULT_EXCLUDE) -> PhysicalSchema:
    """The schema of the database behind ``connection`` (sqlite3, psycopg2 or pymysql), in Pony's spelling.

    PostgreSQL: the tables of the current schema (the first of ``search_path``); MariaDB: the current
    database; SQLite: the main database. Tables named in ``exclude`` (the version table by default) are
    left out. The connection's transaction is not committed or rolled back: only catalog queries run.
    """
    skip = frozenset(exclude)
    if dialect == "sqlite":
        from ._introspect_sqlite import read_tables
    elif dialect == "postgres":
        from ._introspect_postgres import read_tables
    elif dialect == "mysql":
        from ._introspect_mysql import read_tables
    else:
        raise ValueError(f"unknown dialect {dialect!r}: expected 'sqlite', 'postgres' or 'mysql'")
    tables = [table for table in read_tables(connection) if table.name not in skip]
    tables = [_with_link_flag(table) for table in tables]
    tables.sort(key=lambda t: t.name)
    return PhysicalSchema(
        dialect=dialect, tables={t.name: t for t in tables}, order=tuple(t.name for t in tables)
    )


def _with_link_flag(table: PhysicalTable) -> PhysicalTable:
    # Best effort: a many-to-many table of Pony has only primary-key columns, each in a foreign key, and at
    # least two foreign keys (one per side; both to the same table for a self-relation).
    primary = next((index for index in table.indexes if index.primary), None)
    if primary is None or len(table.foreign_keys) < 2:
        return table
    in_fks = {column for fk in table.foreign_keys for column in fk.columns}
    names = set(table.column_names)
    if set(primary.columns) == names and in_fks == names:
        return PhysicalTable(table.name, table.columns, table.indexes, table.foreign_keys, "", link=True)
    return table


def sort_table_parts(
    indexes: list[PhysicalIndex], fks: list[PhysicalForeignKey]
) -> tuple[tuple[PhysicalIndex, ...], tuple[PhysicalForeignKey, ...]]:
    """Indexes and foreign keys in ``physical_schema``'s order (primary first, then by name and columns)."""
    indexes.sort(key=lambda i: (not i.primary, i.name or "", i.columns))
    fks.sort(key=lambda f: (f.name or "", f.columns))
    return tuple(indexes), tuple(fks)


def on_delete(rule: str | None) -> str | None:
    """A referential action as ``physical_schema`` spells it: None for the default (no action/restrict)."""
    if rule is None:
        return None
    rule = rule.upper()
    return None if rule in ("NO ACTION", "RESTRICT", "") else rule
