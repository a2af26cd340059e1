"""PostgreSQL ``COPY ... FROM STDIN`` for bulk_insert: Pony-encoded values in COPY's text format (private).

The values rendered here are the ones the INSERT path binds: validated and converted by Pony's
converters (``validate``, ``val2dbval``, ``py2sql``). Each is written as the text PostgreSQL's input
function of the column receives from psycopg2's literal for that value, so COPY stores exactly what the
INSERT would (checked by the oracle tests, ``tests/bulk/test_bulk_copy.py``):

* ``None`` as ``\\N``; ``str`` with backslash, tab, newline and carriage return escaped;
* ``bool`` as ``t``/``f``; ``int`` and ``Decimal`` as ``str()`` (a non-finite Decimal as ``NaN``, as
  psycopg2 binds it); ``float`` as ``repr()`` with ``Infinity``/``-Infinity``/``NaN``, and ``-0.0``
  as ``0`` (psycopg2's literal ``-0.0`` is a numeric constant, which has no negative zero);
* ``date``/``time``/naive ``datetime`` in ISO format; ``timedelta`` as psycopg2 writes an interval;
  ``UUID`` as its text; ``bytes`` as bytea hex; flat lists (Pony's ``IntArray``/``StrArray``/
  ``FloatArray``) in array syntax.

A value with no exact COPY form (a timezone-aware ``datetime``, which psycopg2 binds as ``timestamptz``
and PostgreSQL then shifts to the session's time zone; any type not listed) raises
:class:`CopyUnsupported`, and the caller writes that batch with INSERT instead. Text with NUL
(``\\x00``), which PostgreSQL cannot store and psycopg2 refuses to bind, raises :class:`NulInText`.
The per-column work is vectorised: a column of clean strings is checked once, as one joined string.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import io
import math
import operator
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from .. import _pony
from .._sql import Dialect
from ._rows import RowPlan

__all__ = ["CopyUnsupported", "NulInText", "copy_allowed", "copy_rows", "copy_text", "row_security_active"]

_NULL = "\\N"
_NoneType = type(None)
_BOOL = {True: "t", False: "f"}.__getitem__
_TZINFO = operator.attrgetter("tzinfo")


class CopyUnsupported(Exception):
    """A value has no COPY text that stores exactly what INSERT stores: write the batch with INSERT."""


class NulInText(ValueError):
    """Text holding NUL (0x00), which PostgreSQL text cannot store; ``row`` and ``column`` locate it."""

    def __init__(self, row: int, column: int) -> None:
        # Worded as what was expected: BulkWriteError quotes it after "Expected:".
        super().__init__("text without NUL (0x00) characters, which PostgreSQL text cannot hold")
        self.row = row
        self.column = column


def _text(value: str) -> str:
    if "\x00" in value:
        raise NulInText(-1, -1)
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _clean(joined: str) -> bool:
    """True if no value in the joined text needs an escape (nor holds NUL)."""
    return not ("\\" in joined or "\t" in joined or "\n" in joined or "\r" in joined or "\x00" in joined)


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0.0:
        return "0"  # psycopg2's literal -0.0 reaches the column as numeric zero: never a negative zero
    return repr(value)


def _decimal(value: decimal.Decimal) -> str:
    return str(value) if value.is_finite() else "NaN"  # psycopg2 binds every non-finite Decimal as NaN


def _datetime(value: _dt.datetime) -> str:
    if value.tzinfo is not None:
        raise CopyUnsupported("timezone-aware datetime")
    return value.isoformat()


def _timedelta(value: _dt.timedelta) -> str:
    return f"{value.days} days {value.seconds}.{value.microseconds:06d} seconds"


def _bytes(value: Any) -> str:
    return "\\\\x" + bytes(value).hex()


def _array_item(value: Any) -> str:
    kind = type(value)
    if value is None:
        return "NULL"
    if kind is str:
        text: str = value
        if "\x00" in text:
            raise NulInText(-1, -1)
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if kind is int:
        return str(value)
    if kind is float:
        return _float(value)
    raise CopyUnsupported(f"array item of type {kind.__name__}")


def _array(value: list[Any]) -> str:
    return _text("{" + ",".join(map(_array_item, value)) + "}")


_RENDER: dict[type, Callable[[Any], str]] = {
    str: _text,
    int: str,
    bool: _BOOL,
    float: _float,
    decimal.Decimal: _decimal,
    _dt.datetime: _datetime,
    _dt.date: _dt.date.isoformat,
    _dt.time: _dt.time.isoformat,
    _dt.timedelta: _timedelta,
    uuid.UUID: str,
    bytes: _bytes,
    bytearray: _bytes,
    memoryview: _bytes,
    list: _array,
}


def _any(value: Any) -> str:
    render = _RENDER.get(type(value))
    if render is None:
        raise CopyUnsupported(f"a value of type {type(value).__name__}")
    return render(value)


def _column(col: Sequence[Any]) -> Sequence[str]:
    types = set(map(type, col))
    nullable = _NoneType in types
    if nullable:
        types.discard(_NoneType)
        if not types:
            return [_NULL] * len(col)
    if len(types) != 1:
        return [_NULL if v is None else _any(v) for v in col]
    (kind,) = types
    if not nullable:
        # The common cases, in C loops: a clean string column is checked once, as one joined string.
        if kind is str and _clean("".join(col)):
            return col
        fast = _VECTOR.get(kind)
        if fast is not None:
            return fast(col)
    elif kind is str and _clean("".join(filter(None, col))):
        return [_NULL if v is None else v for v in col]
    render = _RENDER.get(kind)
    if render is None:
        raise CopyUnsupported(f"a value of type {kind.__name__}")
    if nullable:
        return [_NULL if v is None else render(v) for v in col]
    return list(map(render, col))


def _decimals(col: Sequence[decimal.Decimal]) -> list[str]:
    if all(map(decimal.Decimal.is_finite, col)):
        return list(map(str, col))
    return list(map(_decimal, col))


def _datetimes(col: Sequence[_dt.datetime]) -> list[str]:
    if set(map(_TZINFO, col)) != {None}:
        raise CopyUnsupported("timezone-aware datetime")
    return list(map(_dt.datetime.isoformat, col))


# Whole columns of one type without None: loops that stay in C.
_VECTOR: dict[type, Callable[[Sequence[Any]], list[str]]] = {
    int: lambda col: list(map(str, col)),
    bool: lambda col: list(map(_BOOL, col)),
    decimal.Decimal: _decimals,
    _dt.datetime: _datetimes,
    _dt.date: lambda col: list(map(_dt.date.isoformat, col)),
}


def copy_text(columns: Sequence[Sequence[Any]]) -> str:
    """The COPY text (tab-separated, one line per row) of values encoded for PostgreSQL, given as one
    sequence per column.

    Raises :class:`CopyUnsupported` (write with INSERT instead) or :class:`NulInText` (naming the row
    and column of the first NUL).
    """
    if not columns or not columns[0]:
        return ""
    rendered = []
    for index, col in enumerate(columns):
        try:
            rendered.append(_column(col))
        except NulInText:
            row = next(i for i, v in enumerate(col) if _has_nul(v))
            raise NulInText(row, index) from None
    return "\n".join(map("\t".join, zip(*rendered, strict=True))) + "\n"


def _has_nul(value: Any) -> bool:
    if type(value) is str:
        return "\x00" in value
    if type(value) is list:
        return any(type(v) is str and "\x00" in v for v in value)
    return False


# ---------------------------------------------------------------------------------------------------------
# Running COPY for bulk_insert


def copy_allowed(plan: RowPlan, dialect: Dialect, return_ids: bool) -> bool:
    """True if bulk_insert may write ``plan``'s table with COPY (the table is asked once per entity).

    With ``return_ids``, rows without their key take it from the key's sequence beforehand, exactly
    what the column's default would give them; that needs the default to be the sequence's
    ``nextval`` and no user trigger (which could change the key that RETURNING would report).
    """
    if dialect.name != "postgres":
        return False
    state = plan.copy_target
    if state is None:
        auto = plan.attrs[plan.auto_pk].columns[0] if plan.auto_pk else None
        table = dialect.q(plan.table)
        cursor = _pony.execute_in_session(dialect.db, dialect.copy_target_sql(), (table, auto, auto, table))
        row = cursor.fetchone() or (False, True, None)
        # PostgreSQL refuses COPY FROM where row-level security applies to the role: INSERT instead.
        like_insert = bool(row[0]) and not row_security_active(dialect, table)
        state = plan.copy_target = (like_insert, bool(row[1]), row[2])
    like_insert, triggers, sequence = state
    if return_ids and plan.auto_pk is not None:
        return like_insert and not triggers and sequence is not None
    return like_insert


def row_security_active(dialect: Dialect, table: str) -> bool:
    """True if row-level security applies to the connecting role on ``table`` (quoted name; PostgreSQL)."""
    sql = f"SELECT row_security_active(to_regclass({dialect.placeholder}))"
    row = _pony.execute_in_session(dialect.db, sql, (table,)).fetchone()
    return bool(row and row[0])


def copy_rows(plan: RowPlan, dialect: Dialect, names: tuple[str, ...], text: str, count: int) -> None:
    """COPY ``count`` rows (their COPY ``text``) into the ``names`` columns, in the session's transaction."""
    sql = dialect.copy_from_stdin(plan.table, plan.columns_of(names))
    copied = _pony.copy_in_session(dialect.db, sql, io.StringIO(text))
    if copied != count:  # the driver's COPY broke its contract: not a user error
        raise RuntimeError(f"bulk_insert({plan.name}): COPY wrote {copied} rows of {count}")
