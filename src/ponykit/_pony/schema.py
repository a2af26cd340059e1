"""A mapped Database's physical schema, read from Pony's ``DBSchema`` into plain frozen values.

Everything physical (table, column, index and constraint names, SQL types, the DDL text itself) is what
Pony computed in ``generate_mapping()`` for the Database's dialect: the migrations plan their DDL from two
of these and the live database is introspected into the same shape, so ponykit re-implements none of
Pony's naming.

Names the backend chooses (a primary key's, a single-column UNIQUE's, SQLite's foreign keys') are None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pony.orm import Database

from .database import dialect as dialect_of

__all__ = [
    "PhysicalColumn",
    "PhysicalForeignKey",
    "PhysicalIndex",
    "PhysicalSchema",
    "PhysicalTable",
    "physical_schema",
]


@dataclass(frozen=True)
class PhysicalColumn:
    """One column as Pony declares it."""

    name: str
    sql_type: str  # upper-case, as in Pony's DDL: "VARCHAR(80)", "DECIMAL(12, 2)", "INTEGER"
    not_null: bool  # primary-key columns count as NOT NULL
    default: str | None  # the raw ``sql_default`` text, or None
    auto: bool = False  # the autoincrement primary key (SERIAL, AUTO_INCREMENT, AUTOINCREMENT)
    primary: bool = False  # the whole single-column primary key
    unique: bool = False  # a single-column UNIQUE (backend-named)
    definition: str = ""  # Pony's column DDL inside CREATE TABLE (SQLite: with an inline REFERENCES)


@dataclass(frozen=True)
class PhysicalIndex:
    """An index or a unique/primary-key constraint."""

    name: str | None  # None: named by the backend (primary key, single-column UNIQUE)
    columns: tuple[str, ...]
    unique: bool
    primary: bool = False
    # How Pony creates it: "inline" (inside CREATE TABLE: the primary key, UNIQUE constraints) or "index"
    # (a separate CREATE INDEX).
    kind: str = "index"
    create_sql: str | None = None  # CREATE [UNIQUE] INDEX ... (kind "index")
    # The CREATE TABLE fragment of a named "inline" one: CONSTRAINT "unq_x" UNIQUE (...)
    constraint_sql: str | None = None


@dataclass(frozen=True)
class PhysicalForeignKey:
    """A foreign key."""

    name: str | None  # None on SQLite (unnamed)
    columns: tuple[str, ...]
    parent_table: str
    parent_columns: tuple[str, ...]
    on_delete: str | None  # "CASCADE", "SET NULL" or None
    create_sql: str | None = None  # ALTER TABLE ... ADD CONSTRAINT ... (PostgreSQL, MySQL); None on SQLite


@dataclass(frozen=True)
class PhysicalTable:
    """A table: its columns in order, indexes, foreign keys and Pony's CREATE TABLE."""

    name: str
    columns: tuple[PhysicalColumn, ...]
    indexes: tuple[PhysicalIndex, ...]
    foreign_keys: tuple[PhysicalForeignKey, ...]
    create_sql: str = ""
    link: bool = False  # a many-to-many link table

    def column(self, name: str) -> PhysicalColumn:
        """The column ``name`` (KeyError if the table has none)."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"table {self.name!r} has no column {name!r}")

    @property
    def column_names(self) -> tuple[str, ...]:
        """The column names in table order."""
        return tuple(column.name for column in self.columns)


@dataclass(frozen=True)
class PhysicalSchema:
    """The tables of a mapped Database for one dialect; ``order`` is Pony's creation order."""

    dialect: str
    tables: Mapping[str, PhysicalTable]
    order: tuple[str, ...] = field(default=())


def _name(table_name: Any) -> str:
    if not isinstance(table_name, str):
        raise NotImplementedError(f"migrations do not support schema-qualified table names: {table_name!r}")
    return table_name


def _table(table: Any, named_fks: bool) -> PhysicalTable:
    columns = []
    for column in table.column_list:
        is_pk = column.is_pk
        columns.append(
            PhysicalColumn(
                name=column.name,
                sql_type=str(column.sql_type).upper(),
                not_null=bool(column.is_not_null) or bool(is_pk) or bool(column.is_pk_part),
                default=None if column.sql_default in (None, True, False) else str(column.sql_default),
                auto=is_pk == "auto",
                primary=bool(is_pk),
                unique=bool(column.is_unique) and not is_pk,
                definition=column.get_sql(),
            )
        )
    indexes = []
    for cols, index in table.indexes.items():
        names = tuple(c.name for c in cols)
        if index.is_pk:
            indexes.append(PhysicalIndex(None, names, True, primary=True, kind="inline"))
        elif index.is_unique and len(cols) == 1:
            indexes.append(PhysicalIndex(None, names, True, kind="inline"))
        elif index.is_unique:
            fragment = index.get_sql()
            indexes.append(PhysicalIndex(index.name, names, True, kind="inline", constraint_sql=fragment))
        else:
            indexes.append(PhysicalIndex(index.name, names, False, create_sql=index.get_create_command()))
    fks = []
    for cols, fk in table.foreign_keys.items():
        fks.append(
            PhysicalForeignKey(
                name=fk.name if named_fks else None,
                columns=tuple(c.name for c in cols),
                parent_table=_name(fk.parent_table.name),
                parent_columns=tuple(c.name for c in fk.parent_columns),
                on_delete=fk.on_delete or None,
                create_sql=fk.get_create_command() if named_fks else None,
            )
        )
    indexes.sort(key=lambda i: (not i.primary, i.name or "", i.columns))
    fks.sort(key=lambda f: (f.name or "", f.columns))
    return PhysicalTable(
        name=_name(table.name),
        columns=tuple(columns),
        indexes=tuple(indexes),
        foreign_keys=tuple(fks),
        create_sql=table.get_create_command(),
        link=bool(table.m2m),
    )


def physical_schema(db: Database) -> PhysicalSchema:
    """The physical schema Pony computed for a mapped ``db`` on its own dialect."""
    schema = db.schema
    if schema is None:
        raise ValueError("the Database is not mapped yet: call generate_mapping() or map it offline")
    named = bool(schema.named_foreign_keys)
    tables = {_name(name): _table(table, named) for name, table in schema.tables.items()}
    order = tuple(_name(table.name) for table in schema.order_tables_to_create())
    return PhysicalSchema(dialect=dialect_of(db), tables=tables, order=order)
