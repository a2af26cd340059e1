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

from ponykit._pony import PhysicalSchema, PhysicalTable

from . import _introspect_mysql, _introspect_postgres, _introspect_sqlite

__all__ = ["DEFAULT_EXCLUDE", "introspect"]

DEFAULT_EXCLUDE: frozenset[str] = frozenset({"ponykit_migration"})


def introspect(connection: Any, dialect: str, *, exclude: Iterable[str] = DEFAULT_EXCLUDE) -> PhysicalSchema:
    """The schema of the database behind ``connection`` (sqlite3, psycopg2 or pymysql), in Pony's spelling.

    PostgreSQL: the tables of the current schema (the first of ``search_path``); MariaDB: the current
    database; SQLite: the main database. Tables named in ``exclude`` (the version table by default) are
    left out. The connection's transaction is not committed or rolled back: only catalog queries run.
    """
    skip = frozenset(exclude)
    readers = {"sqlite": _introspect_sqlite, "postgres": _introspect_postgres, "mysql": _introspect_mysql}
    if dialect not in readers:
        raise ValueError(f"unknown dialect {dialect!r}: expected 'sqlite', 'postgres' or 'mysql'")
    tables = [table for table in readers[dialect].read_tables(connection) if table.name not in skip]
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
