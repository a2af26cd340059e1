"""Comparing two physical schemas: the one Pony computes for the models and the one a live database has.

:func:`compare` lists every :class:`Difference` (a missing or extra table, column, index or foreign key; a
column whose type, nullability, default or autoincrement differs; an index whose columns or uniqueness
differ; a Pony-named index or constraint under another name). Column order and the names the backend
chooses (primary keys, single-column UNIQUE constraints, SQLite's foreign keys) are ignored; types are
compared after folding synonyms (``INT``/``INTEGER``, ``NUMERIC``/``DECIMAL``) and defaults after
normalization (casts, quoting, ``TRUE``/``1``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from ponykit._pony import PhysicalColumn, PhysicalForeignKey, PhysicalIndex, PhysicalSchema, PhysicalTable
from ponykit.migrate._plan_postgres import _real_type

__all__ = ["Difference", "compare", "normalize_default", "normalize_type"]

# What each kind of difference is about, for the message: "<object> <table>.<name>: <what> ..."
_MESSAGES = {
    "table_missing": "table {table}: expected by the models, not found in the database",
    "table_extra": "table {table}: found in the database, not in the models",
    "column_missing": "column {table}.{name}: expected ({expected}), not found",
    "column_extra": "column {table}.{name}: not expected, found ({actual})",
    "column_type": "column {table}.{name}: type {expected} expected, {actual} found",
    "column_not_null": "column {table}.{name}: {expected} expected, {actual} found",
    "column_default": "column {table}.{name}: default {expected} expected, {actual} found",
    "column_auto": "column {table}.{name}: autoincrement {expected} expected, {actual} found",
    "primary_key": "primary key of {table}: columns {expected} expected, {actual} found",
    "index_missing": "index {table}.{name}: expected {expected}, not found",
    "index_extra": "index {table}.{name}: not expected, found {actual}",
    "index_name": "index {table}.{name}: name {expected} expected, {actual} found",
    "index_definition": "index {table}.{name}: {expected} expected, {actual} found",
    "foreign_key_missing": "foreign key {table}.{name}: expected {expected}, not found",
    "foreign_key_extra": "foreign key {table}.{name}: not expected, found {actual}",
    "foreign_key_name": "foreign key {table}.{name}: name {expected} expected, {actual} found",
    "foreign_key_on_delete": "foreign key {table}.{name}: ON DELETE {expected} expected, {actual} found",
}


@dataclass(frozen=True)
class Difference:
    """One way the actual schema differs from the expected one.

    ``kind`` is one of ``table_missing table_extra column_missing column_extra column_type column_not_null
    column_default column_auto primary_key index_missing index_extra index_name index_definition
    foreign_key_missing foreign_key_extra foreign_key_name foreign_key_on_delete``; ``table`` the table;
    ``name`` the column, index or foreign key (its columns when it has no name); ``expected`` and ``actual``
    the two sides as text (None when absent).
    """

    kind: str
    table: str
    name: str | None
    expected: str | None
    actual: str | None

    def __str__(self) -> str:
        template = _MESSAGES.get(self.kind, "{kind} {table}.{name}: {expected} expected, {actual} found")
        return template.format(
            kind=self.kind, table=self.table, name=self.name, expected=self.expected, actual=self.actual
        )


_TYPE_SYNONYMS = {
    "INT": "INTEGER",
    "INT4": "INTEGER",
    "INT2": "SMALLINT",
    "INT8": "BIGINT",
    "NUMERIC": "DECIMAL",
    "FLOAT8": "DOUBLE PRECISION",
    "BOOL": "BOOLEAN",
    "CHARACTER VARYING": "VARCHAR",
    "TIMESTAMP WITHOUT TIME ZONE": "TIMESTAMP",
    "TIME WITHOUT TIME ZONE": "TIME",
}
_TYPE_HEAD = re.compile(r"^([A-Z][A-Z0-9 ]*?)\s*(\(.*\))?((?:\s*\[\])*)((?: UNSIGNED)?)$")


def normalize_type(sql_type: str) -> str:
    """A type with synonyms folded and regular spacing (``numeric(10,2)`` -> ``DECIMAL(10, 2)``)."""
    text = " ".join(sql_type.upper().split())
    match = _TYPE_HEAD.match(text)
    if not match:
        return text
    head, args, arrays, unsigned = match.groups()
    head = _TYPE_SYNONYMS.get(head, head)
    args = "(" + ", ".join(a.strip() for a in args[1:-1].split(",")) + ")" if args else ""
    return head + args + arrays.replace(" ", "") + unsigned


_CAST = re.compile(r"::[a-z_][a-z0-9_ ]*(\(\d+(,\s*\d+)?\))?(\[\])*$", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def normalize_default(text: str | None) -> str | None:
    """A default expression in one canonical spelling for comparison, None for no default.

    Drops PostgreSQL's casts and redundant parentheses, reads ``NULL`` as no default, unquotes string
    literals (so ``'5'`` and ``5`` are equal), normalizes numbers (``1.50`` = ``1.5``), spells booleans ``1``
    and ``0`` (SQLite keeps ``TRUE``, PostgreSQL reads back ``true``, MariaDB ``1``), and lower-cases
    function calls without spaces (``CURRENT_TIMESTAMP`` = ``current_timestamp()``).
    """
    if text is None:
        return None
    value = text.strip()
    while True:
        before = value
        value = _CAST.sub("", value).strip()
        if value.startswith("(") and value.endswith(")") and _balanced(value[1:-1]):
            value = value[1:-1].strip()
        if value == before:
            break
    if value.upper() == "NULL":
        return None
    if len(value) >= 2 and value[0] == "'" and value[-1] == "'" and _single_literal(value):
        value = value[1:-1].replace("''", "'").replace("\\'", "'")
        return "'" + _number(value) + "'" if _NUMBER.fullmatch(value) else "'" + value + "'"
    if value.upper() in ("TRUE", "FALSE"):
        return "'1'" if value.upper() == "TRUE" else "'0'"
    if _NUMBER.fullmatch(value):
        return "'" + _number(value) + "'"
    lowered = "".join(value.lower().split())
    if lowered.endswith("()"):
        lowered = lowered[:-2]
    return lowered


def _number(text: str) -> str:
    try:
        number = Decimal(text)
    except InvalidOperation:
        return text
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


def _single_literal(text: str) -> bool:
    inner = text[1:-1].replace("''", "")
    return "'" not in inner.replace("\\'", "")


def _balanced(text: str) -> bool:
    depth, quoted = 0, False
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char in "()":
            depth += 1 if char == "(" else -1
            if depth < 0:
                return False
    return depth == 0


def _cols(columns: tuple[str, ...]) -> str:
    return "(" + ", ".join(columns) + ")"


def _describe_column(column: PhysicalColumn) -> str:
    text = column.sql_type + (" NOT NULL" if column.not_null else " NULL")
    return text + (f" DEFAULT {column.default}" if column.default is not None else "")


def _describe_index(index: PhysicalIndex) -> str:
    return ("UNIQUE " if index.unique else "") + "INDEX " + _cols(index.columns)


def _describe_fk(fk: PhysicalForeignKey) -> str:
    text = f"{_cols(fk.columns)} REFERENCES {fk.parent_table} {_cols(fk.parent_columns)}"
    return text + (f" ON DELETE {fk.on_delete}" if fk.on_delete else "")


def _columns(expected: PhysicalTable, actual: PhysicalTable, out: list[Difference]) -> None:
    t = expected.name
    live = {column.name: column for column in actual.columns}
    for column in expected.columns:
        found = live.pop(column.name, None)
        if found is None:
            out.append(Difference("column_missing", t, column.name, _describe_column(column), None))
            continue
        # Pony 0.7.20 writes SERIAL for every auto int on PostgreSQL (size=64 too): compare what it creates
        want = _real_type(column)
        if normalize_type(want) != normalize_type(found.sql_type):
            out.append(Difference("column_type", t, column.name, want, found.sql_type))
        if column.not_null != found.not_null:
            spell = {True: "NOT NULL", False: "NULL"}
            out.append(
                Difference("column_not_null", t, column.name, spell[column.not_null], spell[found.not_null])
            )
        if normalize_default(column.default) != normalize_default(found.default):
            out.append(Difference("column_default", t, column.name, column.default, found.default))
        if column.auto != found.auto:
            out.append(Difference("column_auto", t, column.name, str(column.auto), str(found.auto)))
    for column in live.values():
        out.append(Difference("column_extra", t, column.name, None, _describe_column(column)))


def _indexes(expected: PhysicalTable, actual: PhysicalTable, out: list[Difference]) -> None:
    t = expected.name
    want_pk = next((i.columns for i in expected.indexes if i.primary), ())
    have_pk = next((i.columns for i in actual.indexes if i.primary), ())
    if want_pk != have_pk:
        out.append(Difference("primary_key", t, None, _cols(want_pk), _cols(have_pk)))
    remaining = [i for i in actual.indexes if not i.primary]
    unmatched: list[PhysicalIndex] = []
    # Named ones first, by name; then by (columns, unique) for the backend-named ones and the renamed.
    for index in sorted((i for i in expected.indexes if not i.primary), key=lambda i: i.name is None):
        same_name = next((i for i in remaining if index.name is not None and i.name == index.name), None)
        if same_name is not None:
            remaining.remove(same_name)
            if (same_name.columns, same_name.unique) != (index.columns, index.unique):
                out.append(
                    Difference(
                        "index_definition", t, index.name, _describe_index(index), _describe_index(same_name)
                    )
                )
            continue
        unmatched.append(index)
    for index in unmatched:
        same_shape = next(
            (i for i in remaining if (i.columns, i.unique) == (index.columns, index.unique)), None
        )
        if same_shape is None:
            out.append(
                Difference(
                    "index_missing", t, index.name or _cols(index.columns), _describe_index(index), None
                )
            )
            continue
        remaining.remove(same_shape)
        if index.name is not None and same_shape.name is not None and same_shape.name != index.name:
            out.append(Difference("index_name", t, index.name, index.name, same_shape.name))
    for index in remaining:
        out.append(
            Difference("index_extra", t, index.name or _cols(index.columns), None, _describe_index(index))
        )


def _foreign_keys(expected: PhysicalTable, actual: PhysicalTable, out: list[Difference]) -> None:
    t = expected.name

    def key(fk: PhysicalForeignKey) -> tuple[object, ...]:
        return (fk.columns, fk.parent_table, fk.parent_columns)

    remaining = list(actual.foreign_keys)
    for fk in expected.foreign_keys:
        label = fk.name or _cols(fk.columns)
        found = next((f for f in remaining if key(f) == key(fk)), None)
        if found is None:
            out.append(Difference("foreign_key_missing", t, label, _describe_fk(fk), None))
            continue
        remaining.remove(found)
        if fk.name is not None and found.name is not None and fk.name != found.name:
            out.append(Difference("foreign_key_name", t, label, fk.name, found.name))
        if fk.on_delete != found.on_delete:
            out.append(
                Difference(
                    "foreign_key_on_delete",
                    t,
                    label,
                    fk.on_delete or "NO ACTION",
                    found.on_delete or "NO ACTION",
                )
            )
    for fk in remaining:
        out.append(Difference("foreign_key_extra", t, fk.name or _cols(fk.columns), None, _describe_fk(fk)))


def compare(expected: PhysicalSchema, actual: PhysicalSchema) -> list[Difference]:
    """Every difference of ``actual`` (usually introspected) from ``expected`` (usually the models'), in a
    stable order: by table, then columns, primary key, indexes, foreign keys. [] when they match."""
    out: list[Difference] = []
    for name in sorted(set(expected.tables) | set(actual.tables)):
        want = expected.tables.get(name)
        have = actual.tables.get(name)
        if want is None:
            out.append(
                Difference("table_extra", name, None, None, _cols(have.column_names) if have else None)
            )
        elif have is None:
            out.append(Difference("table_missing", name, None, _cols(want.column_names), None))
        else:
            _columns(want, have, out)
            _indexes(want, have, out)
            _foreign_keys(want, have, out)
    return out
