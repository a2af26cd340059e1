"""SQLite's catalog (``sqlite_master`` and the table PRAGMAs) read into ``PhysicalTable`` values.

SQLite keeps the declared type text verbatim, so types are Pony's own (upper-cased). Its quirks: an
``INTEGER PRIMARY KEY`` reports ``notnull=0`` and AUTOINCREMENT shows only in the CREATE TABLE text; UNIQUE
constraints become ``sqlite_autoindex_<T>_<n>`` indexes, so Pony's composite ``unq_`` names are recovered
from the CREATE TABLE text; foreign keys are unnamed.
"""

from __future__ import annotations

import re
from typing import Any

from ponykit._pony import PhysicalColumn, PhysicalForeignKey, PhysicalIndex, PhysicalTable

from ._introspect_common import on_delete, sort_table_parts

__all__ = ["read_tables"]

_CONSTRAINT_UNIQUE = re.compile(r'CONSTRAINT\s+"((?:[^"]|"")+)"\s+UNIQUE\s*\(([^)]*)\)', re.IGNORECASE)
_QUOTED = re.compile(r'"((?:[^"]|"")+)"|(\w+)')


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _rows(connection: Any, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    cursor = connection.cursor()
    try:
        cursor.execute(sql, args)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _constraint_names(create_sql: str) -> dict[tuple[str, ...], str]:
    names: dict[tuple[str, ...], str] = {}
    for match in _CONSTRAINT_UNIQUE.finditer(create_sql):
        columns = tuple((q.replace('""', '"') if q else bare) for q, bare in _QUOTED.findall(match.group(2)))
        names[columns] = match.group(1).replace('""', '"')
    return names


def _table(connection: Any, name: str, create_sql: str) -> PhysicalTable:
    info = _rows(connection, f"PRAGMA table_xinfo({_q(name)})")
    # table_xinfo: cid, name, type, notnull, dflt_value, pk (ordinal in the key), hidden
    visible = [row for row in info if row[6] == 0]
    pk_columns = tuple(row[1] for row in sorted((r for r in visible if r[5]), key=lambda r: r[5]))
    autoincrement = "AUTOINCREMENT" in create_sql.upper()
    columns = []
    unique_singles: set[str] = set()
    indexes: list[PhysicalIndex] = []
    constraint_names = _constraint_names(create_sql)
    for _seq, index_name, unique, origin, _partial in _rows(connection, f"PRAGMA index_list({_q(name)})"):
        if origin == "pk":
            continue  # the primary key is read from table_xinfo (an INTEGER PRIMARY KEY has no index)
        cols = tuple(row[2] for row in sorted(_rows(connection, f"PRAGMA index_info({_q(index_name)})")))
        if unique and len(cols) == 1 and origin == "u":
            unique_singles.add(cols[0])
            indexes.append(PhysicalIndex(None, cols, True, kind="inline"))
        elif origin == "u":
            indexes.append(PhysicalIndex(constraint_names.get(cols), cols, bool(unique), kind="inline"))
        else:
            indexes.append(PhysicalIndex(index_name, cols, bool(unique)))
    if pk_columns:
        indexes.append(PhysicalIndex(None, pk_columns, True, primary=True, kind="inline"))
    for _cid, col_name, col_type, notnull, default, pk, _hidden in visible:
        single_pk = len(pk_columns) == 1 and bool(pk)
        columns.append(
            PhysicalColumn(
                name=col_name,
                sql_type=str(col_type).upper(),
                not_null=bool(notnull) or bool(pk),
                default=None if default is None else str(default),
                auto=single_pk and autoincrement and str(col_type).upper() == "INTEGER",
                primary=single_pk,
                unique=col_name in unique_singles and not single_pk,
            )
        )
    fk_rows = _rows(connection, f"PRAGMA foreign_key_list({_q(name)})")
    # foreign_key_list: id, seq, table, from, to, on_update, on_delete, match
    by_id: dict[int, list[Any]] = {}
    for row in fk_rows:
        by_id.setdefault(row[0], []).append(row)
    fks = []
    for rows in by_id.values():
        rows.sort(key=lambda r: r[1])
        parent = rows[0][2]
        parent_cols = tuple(r[4] for r in rows)
        if any(col is None for col in parent_cols):  # REFERENCES t without columns: the parent's PK
            parent_cols = _primary_key(connection, parent)
        fks.append(
            PhysicalForeignKey(None, tuple(r[3] for r in rows), parent, parent_cols, on_delete(rows[0][6]))
        )
    ordered_indexes, ordered_fks = sort_table_parts(indexes, fks)
    return PhysicalTable(name, tuple(columns), ordered_indexes, ordered_fks)


def _primary_key(connection: Any, table: str) -> tuple[str, ...]:
    info = _rows(connection, f"PRAGMA table_info({_q(table)})")
    return tuple(row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5]))


def read_tables(connection: Any) -> list[PhysicalTable]:
    """Every user table of the main database."""
    rows = _rows(
        connection,
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
    )
    return [_table(connection, name, sql or "") for name, sql in rows]
