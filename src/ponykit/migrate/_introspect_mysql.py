"""MariaDB's ``information_schema`` (COLUMNS, STATISTICS, KEY_COLUMN_USAGE, REFERENTIAL_CONSTRAINTS,
CHECK_CONSTRAINTS) read into ``PhysicalTable`` values for the current database.

MariaDB spells types its own way: display widths (``int(11)``, ``smallint(6)``) are dropped and ``int``
becomes ``INTEGER``; ``tinyint(1)`` is Pony's ``BOOLEAN`` (any other tinyint stays ``TINYINT``); Pony's
``JSON`` is stored as ``longtext`` with a ``CHECK (json_valid(col))`` named after the column, and reads back
as ``JSON``. ``COLUMN_DEFAULT`` is the string ``'NULL'`` for a nullable column without a default (None here);
string literals stay quoted as they were declared.
"""

from __future__ import annotations

import re
from typing import Any

from ponykit._pony import PhysicalColumn, PhysicalForeignKey, PhysicalIndex, PhysicalTable

from ._introspect_common import on_delete, sort_table_parts

__all__ = ["pony_type", "read_tables"]

_INTEGER = re.compile(r"(tinyint|smallint|mediumint|int|integer|bigint)(\(\d+\))?( unsigned)?( zerofill)?")
_INT_NAMES = {
    "tinyint": "TINYINT",
    "smallint": "SMALLINT",
    "mediumint": "MEDIUMINT",
    "int": "INTEGER",
    "integer": "INTEGER",
    "bigint": "BIGINT",
}
_DECIMAL = re.compile(r"decimal\((\d+),(\d+)\)( unsigned)?")
_JSON_CHECK = re.compile(r"json_valid\(`((?:[^`]|``)+)`\)", re.IGNORECASE)


def pony_type(column_type: str, json: bool = False) -> str:
    """A ``COLUMN_TYPE`` as Pony writes the type in DDL (``json``: the column has a json_valid CHECK)."""
    text = column_type.lower().strip()
    if json and text == "longtext":
        return "JSON"
    if text == "tinyint(1)":
        return "BOOLEAN"
    match = _INTEGER.fullmatch(text)
    if match:
        return _INT_NAMES[match[1]] + (" UNSIGNED" if match[3] else "")
    match = _DECIMAL.fullmatch(text)
    if match:
        return f"DECIMAL({match[1]}, {match[2]})" + (" UNSIGNED" if match[3] else "")
    return text.upper()


def _rows(connection: Any, sql: str) -> list[Any]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return list(cursor.fetchall())


def _default(raw: Any, not_null: bool) -> str | None:
    if raw is None:
        return None
    text = str(raw)
    if text == "NULL" and not not_null:
        return None  # MariaDB's spelling of "no default" for a nullable column
    return text


def read_tables(connection: Any) -> list[PhysicalTable]:
    """Every base table of the current database."""
    base = {
        row[0]
        for row in _rows(
            connection,
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
            " AND TABLE_TYPE = 'BASE TABLE'",
        )
    }
    json_columns = set()
    for table, clause in _rows(
        connection,
        "SELECT TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS"
        " WHERE CONSTRAINT_SCHEMA = DATABASE()",
    ):
        match = _JSON_CHECK.fullmatch(str(clause).strip())
        if match:
            json_columns.add((table, match[1].replace("``", "`")))
    index_rows: dict[tuple[str, str], list[Any]] = {}
    for table, name, non_unique, _seq, column in _rows(
        connection,
        "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME"
        " FROM information_schema.STATISTICS"
        " WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
    ):
        index_rows.setdefault((table, name), []).append((non_unique, column))
    indexes: dict[str, list[PhysicalIndex]] = {name: [] for name in base}
    primary: dict[str, tuple[str, ...]] = {}
    unique_singles: dict[str, set[str]] = {name: set() for name in base}
    for (table, name), rows in index_rows.items():
        if table not in base:
            continue
        cols = tuple(str(r[1]) for r in rows)
        unique = not int(rows[0][0])
        if name == "PRIMARY":
            primary[table] = cols
            indexes[table].append(PhysicalIndex(None, cols, True, primary=True, kind="inline"))
        elif unique and len(cols) == 1:
            unique_singles[table].add(cols[0])
            indexes[table].append(PhysicalIndex(None, cols, True, kind="inline"))
        else:
            indexes[table].append(PhysicalIndex(name, cols, unique, kind="inline" if unique else "index"))
    fk_rows: dict[tuple[str, str], list[Any]] = {}
    for table, name, column, parent, parent_column, rule in _rows(
        connection,
        "SELECT k.TABLE_NAME, k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME,"
        " k.REFERENCED_COLUMN_NAME,"
        " r.DELETE_RULE FROM information_schema.KEY_COLUMN_USAGE k"
        " JOIN information_schema.REFERENTIAL_CONSTRAINTS r ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA"
        " AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME AND r.TABLE_NAME = k.TABLE_NAME"
        " WHERE k.TABLE_SCHEMA = DATABASE() AND k.REFERENCED_TABLE_NAME IS NOT NULL"
        " ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
    ):
        fk_rows.setdefault((table, name), []).append((column, parent, parent_column, rule))
    fks: dict[str, list[PhysicalForeignKey]] = {name: [] for name in base}
    for (table, name), rows in fk_rows.items():
        if table in fks:
            fks[table].append(
                PhysicalForeignKey(
                    name,
                    tuple(r[0] for r in rows),
                    rows[0][1],
                    tuple(r[2] for r in rows),
                    on_delete(rows[0][3]),
                )
            )
    raw_columns: dict[str, list[Any]] = {name: [] for name in base}
    for table, name, column_type, nullable, default, extra in _rows(
        connection,
        "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA"
        " FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, ORDINAL_POSITION",
    ):
        if table in raw_columns:
            raw_columns[table].append((name, column_type, nullable, default, extra))
    tables = []
    for table, rows in raw_columns.items():
        pk = primary.get(table, ())
        columns = []
        for name, column_type, nullable, default, extra in rows:
            not_null = nullable == "NO"
            columns.append(
                PhysicalColumn(
                    name=name,
                    sql_type=pony_type(str(column_type), (table, name) in json_columns),
                    not_null=not_null,
                    default=_default(default, not_null),
                    auto="auto_increment" in str(extra).lower(),
                    primary=pk == (name,),
                    unique=name in unique_singles[table] and pk != (name,),
                )
            )
        ordered_indexes, ordered_fks = sort_table_parts(indexes[table], fks[table])
        tables.append(PhysicalTable(table, tuple(columns), ordered_indexes, ordered_fks))
    return tables
