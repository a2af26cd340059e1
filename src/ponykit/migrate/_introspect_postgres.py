"""PostgreSQL's catalogs (``pg_attribute``, ``pg_index``, ``pg_constraint``) read into ``PhysicalTable``.

Only the current schema (the first of ``search_path``) is read. ``format_type`` spellings become Pony's
(``character varying(80)`` -> ``VARCHAR(80)``, ``numeric(10,2)`` -> ``DECIMAL(10, 2)``, ``timestamp(3)
without time zone`` -> ``TIMESTAMP(3)``, ``integer[]`` -> ``INT[]``); a SERIAL column (an integer defaulting
to ``nextval(...)``) is ``auto`` with no default; casts PostgreSQL appends to defaults (``'x'::text``) are
dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ponykit._pony import PhysicalColumn, PhysicalForeignKey, PhysicalIndex, PhysicalTable

from ._introspect_common import sort_table_parts

__all__ = ["pony_type", "read_tables", "strip_casts"]

_EXACT = {
    "integer": "INTEGER",
    "smallint": "SMALLINT",
    "bigint": "BIGINT",
    "real": "REAL",
    "double precision": "DOUBLE PRECISION",
    "text": "TEXT",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "time without time zone": "TIME",
    "timestamp without time zone": "TIMESTAMP",
    "timestamp with time zone": "TIMESTAMP WITH TIME ZONE",
    "interval day to second": "INTERVAL DAY TO SECOND",
    "interval": "INTERVAL",
    "uuid": "UUID",
    "bytea": "BYTEA",
    "jsonb": "JSONB",
    "json": "JSON",
    "numeric": "DECIMAL",
    "character varying": "VARCHAR",
}
_PATTERNS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(r"character varying\((\d+)\)"), lambda m: f"VARCHAR({m[1]})"),
    (re.compile(r"character\((\d+)\)"), lambda m: f"CHAR({m[1]})"),
    (re.compile(r"numeric\((\d+),\s*(\d+)\)"), lambda m: f"DECIMAL({m[1]}, {m[2]})"),
    (re.compile(r"numeric\((\d+)\)"), lambda m: f"DECIMAL({m[1]})"),
    (re.compile(r"timestamp\((\d+)\) without time zone"), lambda m: f"TIMESTAMP({m[1]})"),
    (re.compile(r"timestamp\((\d+)\) with time zone"), lambda m: f"TIMESTAMP({m[1]}) WITH TIME ZONE"),
    (re.compile(r"time\((\d+)\) without time zone"), lambda m: f"TIME({m[1]})"),
    (re.compile(r"interval day to second\((\d+)\)"), lambda m: f"INTERVAL DAY TO SECOND({m[1]})"),
]
# Array element types as Pony writes them (IntArray is INT[], StrArray TEXT[], FloatArray DOUBLE PRECISION[]).
_ARRAY_ELEMENT = {"integer": "INT"}
_CAST = re.compile(r"::[a-z_][a-z0-9_ ]*(\(\d+(,\s*\d+)?\))?(\[\])*$", re.IGNORECASE)


def pony_type(formatted: str) -> str:
    """A ``format_type()`` spelling as Pony writes the type in DDL."""
    if formatted.endswith("[]"):
        element = formatted[:-2]
        return _ARRAY_ELEMENT.get(element, pony_type(element)) + "[]"
    if formatted in _EXACT:
        return _EXACT[formatted]
    for pattern, spell in _PATTERNS:
        match = pattern.fullmatch(formatted)
        if match:
            return spell(match)
    return formatted.upper()


def strip_casts(expression: str) -> str:
    """A default expression without the casts PostgreSQL appends (``'x'::character varying`` -> ``'x'``)."""
    text = expression.strip()
    while True:
        stripped = _CAST.sub("", text)
        if stripped.startswith("(") and stripped.endswith(")") and _balanced(stripped[1:-1]):
            stripped = stripped[1:-1].strip()
        if stripped == text:
            return text
        text = stripped


def _balanced(text: str) -> bool:
    depth = 0
    quoted = False
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
ORDER BY c.relname, a.attnum
"""
_INDEXES = """
SELECT t.relname, i.relname, x.indisunique, x.indisprimary,
       ARRAY(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum ORDER BY k.ord),
       x.indexprs IS NOT NULL OR x.indpred IS NOT NULL
FROM pg_index x
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = current_schema()
"""
_FKS = """
SELECT t.relname, c.conname, p.relname, c.confdeltype,
       ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.ord),
       ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum ORDER BY k.ord)
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_class p ON p.oid = c.confrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = current_schema() AND c.contype = 'f'
"""
_ACTIONS = {"c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT", "r": "RESTRICT", "a": None}


def _rows(connection: Any, sql: str) -> list[Any]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return list(cursor.fetchall())


def read_tables(connection: Any) -> list[PhysicalTable]:
    """Every ordinary table of the current schema."""
    raw_columns: dict[str, list[Any]] = {}
    for row in _rows(connection, _COLUMNS):
        raw_columns.setdefault(row[0], []).append(row[1:])
    indexes: dict[str, list[PhysicalIndex]] = {name: [] for name in raw_columns}
    primary: dict[str, tuple[str, ...]] = {}
    unique_singles: dict[str, set[str]] = {name: set() for name in raw_columns}
    for table, name, unique, is_primary, columns, partial in _rows(connection, _INDEXES):
        if table not in indexes:
            continue
        cols = tuple(columns)
        if is_primary:
            primary[table] = cols
            indexes[table].append(PhysicalIndex(None, cols, True, primary=True, kind="inline"))
        elif unique and len(cols) == 1 and not partial:
            unique_singles[table].add(cols[0])
            indexes[table].append(PhysicalIndex(None, cols, True, kind="inline"))
        else:
            indexes[table].append(
                PhysicalIndex(name, cols, bool(unique), kind="inline" if unique else "index")
            )
    fks: dict[str, list[PhysicalForeignKey]] = {name: [] for name in raw_columns}
    for table, name, parent, action, columns, parent_columns in _rows(connection, _FKS):
        if table in fks:
            fks[table].append(
                PhysicalForeignKey(name, tuple(columns), parent, tuple(parent_columns), _ACTIONS.get(action))
            )
    tables = []
    for table, rows in raw_columns.items():
        pk = primary.get(table, ())
        columns = []
        for name, formatted, notnull, default in rows:
            sql_type = pony_type(formatted)
            auto = default is not None and default.startswith("nextval(")
            columns.append(
                PhysicalColumn(
                    name=name,
                    sql_type=sql_type,
                    not_null=bool(notnull),
                    default=None if default is None or auto else strip_casts(default),
                    auto=auto and pk == (name,),
                    primary=pk == (name,),
                    unique=name in unique_singles[table] and pk != (name,),
                )
            )
        ordered_indexes, ordered_fks = sort_table_parts(indexes[table], fks[table])
        tables.append(PhysicalTable(table, tuple(columns), ordered_indexes, ordered_fks))
    return tables
