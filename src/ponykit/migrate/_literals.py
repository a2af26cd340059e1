"""A Python backfill value rendered as a SQL literal for one dialect, the way Pony stores that value.

DDL cannot take bound parameters (``ADD COLUMN ... DEFAULT %s`` is not a prepared statement on every
driver), so backfills are written into the SQL text. Every value is rendered from its type, and text is
quoted by doubling quotes (plus backslashes on MariaDB, whose default ``sql_mode`` treats them as escapes):
input is never concatenated unescaped. The stored form follows Pony's converters: SQLite keeps dates as
ISO text and timedeltas as fractional days, MariaDB keeps UUIDs as ``BINARY(16)`` and timedeltas as
``TIME``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from typing import Any
from uuid import UUID

__all__ = ["literal"]


def _text(value: str, dialect: str) -> str:
    if "\x00" in value:
        raise ValueError("a backfill text cannot contain a NUL character")
    text = value.replace("'", "''")
    if dialect == "mysql":
        text = text.replace("\\", "\\\\")
    return f"'{text}'"


def _blob(value: bytes, dialect: str) -> str:
    if dialect == "postgres":
        return f"'\\x{value.hex()}'::bytea"
    return f"X'{value.hex()}'"


def _timedelta(value: dt.timedelta, dialect: str) -> str:
    if dialect == "postgres":
        return f"'{value.days} days {value.seconds}.{value.microseconds:06d} seconds'::interval"
    if dialect == "mysql":
        micro = abs(value) // dt.timedelta(microseconds=1)
        sign = "-" if value < dt.timedelta(0) else ""
        seconds, micros = divmod(micro, 1_000_000)
        hours, rest = divmod(seconds, 3600)
        return f"'{sign}{hours:02d}:{rest // 60:02d}:{rest % 60:02d}.{micros:06d}'"
    # Pony's SQLite converter: a REAL number of days
    days = value.days + (value.seconds + value.microseconds / 1_000_000.0) / 86400.0
    return repr(days)


def _datetime(value: dt.datetime, dialect: str) -> str:
    if value.tzinfo is not None:
        raise ValueError(f"a backfill datetime must be naive (Pony stores naive datetimes): {value!r}")
    text = value.isoformat(" ")
    if dialect == "sqlite" and len(text) == 19:
        text += ".000000"  # Pony's datetime2timestamp
    prefix = "TIMESTAMP " if dialect == "postgres" else ""
    return f"{prefix}'{text}'"


def literal(value: Any, dialect: str, sql_type: str | None = None) -> str:
    """``value`` as a SQL literal for ``dialect`` ("sqlite", "postgres", "mysql").

    Supports None, bool, int, float, Decimal, str, date, datetime, time, timedelta, UUID, bytes and JSON
    values (dict, list: what a ``Json`` attribute holds); raises ValueError for anything else or for values no
    backend can store (NaN, infinities, NUL in text, aware datetimes). ``sql_type``, the target column's
    type, picks an array literal for a list on PostgreSQL (``INT[]``).
    """
    if dialect not in ("sqlite", "postgres", "mysql"):
        raise ValueError(f"unknown dialect {dialect!r}")
    if dialect == "postgres" and sql_type and sql_type.endswith("[]") and isinstance(value, list | tuple):
        # Pony's IntArray/StrArray/FloatArray are PostgreSQL arrays (SQLite keeps them as JSON text)
        if not value:
            return f"'{{}}'::{sql_type}"
        return "ARRAY[" + ", ".join(literal(item, dialect) for item in value) + f"]::{sql_type}"
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        if dialect == "postgres":
            return "TRUE" if value else "FALSE"
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"a backfill float must be finite, got {value!r}")
        return repr(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"a backfill Decimal must be finite, got {value!r}")
        return str(value) if dialect != "sqlite" else _text(str(value), dialect)
    if isinstance(value, str):
        return _text(value, dialect)
    if isinstance(value, dt.datetime):
        return _datetime(value, dialect)
    if isinstance(value, dt.date):
        prefix = "DATE " if dialect == "postgres" else ""
        return f"{prefix}'{value.isoformat()}'"
    if isinstance(value, dt.time):
        if value.tzinfo is not None:
            raise ValueError(f"a backfill time must be naive: {value!r}")
        prefix = "TIME " if dialect == "postgres" else ""
        return f"{prefix}'{value.isoformat()}'"
    if isinstance(value, dt.timedelta):
        return _timedelta(value, dialect)
    if isinstance(value, UUID):
        if dialect == "postgres":
            return f"'{value}'::uuid"
        return _blob(value.bytes, dialect)  # Pony stores UUIDs as 16 bytes on SQLite and MariaDB
    if isinstance(value, bytes | bytearray | memoryview):
        return _blob(bytes(value), dialect)
    if isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return _text(text, dialect) + ("::jsonb" if dialect == "postgres" else "")
    raise ValueError(f"cannot render a backfill of type {type(value).__name__}: {value!r}")
