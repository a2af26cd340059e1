"""Per-attribute JSON rules: Python value -> JSON-safe value, raw column value -> JSON-safe value,
JSON value -> candidate Python value, and the JSON Schema of one value.

One rule per type, used by every path (``to_dict``, the query fast path, ``from_dict`` and
``json_schema``), so their outputs cannot drift apart:

========================  ====================================================================
Python type               JSON form
========================  ====================================================================
bool, int, str, LongStr   as is
float                     a number; NaN and ±infinity become ``null`` (what orjson does)
Decimal                   a string, exact, quantized to the attribute's scale (``"12.50"``)
date, datetime, time      ISO 8601 text (``datetime.isoformat()``, ``T`` separator)
timedelta                 total seconds: an integer when whole, else a float
UUID                      canonical text (``"1b4e28ba-2fa1-11d2-883f-0016d3cca427"``)
bytes                     standard base64 with padding
Json                      as is (a plain copy, not Pony's tracked wrapper)
enum.Enum                 its ``.value``
ipaddress types           text
ponykit types             ``ponykit.types.json_codec(py_type)``
========================  ====================================================================
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import ipaddress
import math
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from .. import _pony
from ..errors import OptionError
from ..types.base import json_codec

__all__ = ()

Dump = Callable[[Any], Any]
Load = Callable[[Any], Any]


class BadValue(Exception):
    """A JSON value has the wrong shape for an attribute; the message says what was expected."""


def describe(value: Any) -> str:
    """A short description of a JSON input value for error messages (type and truncated repr)."""
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    name = "null" if value is None else kind.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{name} {text}" if value is not None else name


def custom_codec(py_type: Any) -> Any:
    """The JSON codec ``ponykit.types.json_codec`` declares for ``py_type``, or None."""
    try:
        return json_codec(py_type)
    except (TypeError, KeyError, LookupError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------------
# Python value -> JSON-safe value


def _float(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _timedelta(v: dt.timedelta) -> int | float:
    if v.microseconds:
        return v.total_seconds()
    return v.days * 86400 + v.seconds


def _bytes(v: bytes) -> str:
    return base64.b64encode(bytes(v)).decode("ascii")


def _iso_dumper(kind: Any) -> Dump:
    fromiso = kind.fromisoformat

    def dump(v: Any) -> str:
        # Pony 0.7.20 on SQLite hands back time values as the stored text (its sql2py fails and
        # returns the raw value), so text is normalized through the type itself.
        if type(v) is str:
            return str(fromiso(v).isoformat())
        return str(v.isoformat())

    return dump


def _point_index(quantum: Decimal) -> int | None:
    """Where ``str()`` puts the point of a Decimal already at ``quantum``'s scale (``-3`` for ``0.01``).

    ``str(v.quantize(q))`` costs three times ``str(v)``, and values loaded from the database are at the
    attribute's scale already. ``str(v)`` has its point at this index exactly when it is that text:
    scientific notation (``1.2E+5``) puts at least four characters after a point, so for scales 1 to 3
    a point there means plain notation with the scale's digits. Larger scales get None (no shortcut).
    """
    exponent = quantum.as_tuple().exponent
    if isinstance(exponent, int) and -3 <= exponent <= -1:
        return exponent - 1
    return None


def _decimal_dumper(quantum: Decimal) -> Dump:
    point = _point_index(quantum)
    if point is None:
        return lambda v: str(v.quantize(quantum))
    end = point + 1

    def dump(v: Decimal) -> str:
        text = str(v)
        return text if text[point:end] == "." else str(v.quantize(quantum))

    return dump


def decimal_expression(var: str, const: str, quantum: Decimal, *, may_raise: bool = False) -> str:
    """An expression over Decimal ``var`` giving ``str(var.quantize(const))``, where name ``const`` holds
    ``quantum``: ``str(var)`` when that is already at the scale (see :func:`_point_index`). It assigns
    the name ``<const>_text``. With ``may_raise`` it indexes instead of slicing (cheaper, no slice
    object) and raises IndexError for texts shorter than the scale: the caller falls back to the dumper.
    """
    point = _point_index(quantum)
    if point is None:
        return f"str({var}.quantize({const}))"
    text = f"{const}_text"
    probe = f"[{point}]" if may_raise else f"[{point}:{point + 1}]"
    return f"({text} if ({text} := str({var})){probe} == '.' else str({var}.quantize({const})))"


def identity(v: Any) -> Any:
    """The value itself (the rule of types whose values are already JSON-safe)."""
    return v


def value_dumper(attr: Any) -> Dump:
    """The function turning a (non-None) Python value of ``attr`` into its JSON-safe form."""
    py_type = _pony.attr_type(attr)
    codec = custom_codec(py_type)
    if codec is not None:
        return codec.to_json  # type: ignore[no-any-return]
    if isinstance(py_type, type) and issubclass(py_type, enum.Enum):  # before str: str-mixin enums
        return lambda v: v.value
    if py_type is bool or py_type is int or (isinstance(py_type, type) and issubclass(py_type, str)):
        return identity if py_type is not bool else bool
    if py_type is float:
        return _float
    if py_type is Decimal:
        quantum = _pony.decimal_quantum(attr)
        if quantum is None:
            return str
        return _decimal_dumper(quantum)
    if py_type in (dt.datetime, dt.date, dt.time):
        return _iso_dumper(py_type)
    if py_type is dt.timedelta:
        return _timedelta
    if py_type is uuid.UUID:
        return str
    if py_type is bytes:
        return _bytes
    if _is_json_type(py_type):
        return _pony.untracked
    if isinstance(py_type, type) and issubclass(py_type, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str
    if isinstance(py_type, type) and issubclass(py_type, int):
        return int
    raise OptionError(
        f"ponykit cannot serialize attribute {attr} of type {getattr(py_type, '__name__', py_type)!r}: "
        "declare a JSON codec for it in ponykit.types or exclude it"
    )


def _is_json_type(py_type: Any) -> bool:
    from pony.orm import Json

    return py_type is Json


def inline_expression(attr: Any, var: str, const: str, *, native: bool = False) -> tuple[str, Any] | None:
    """``(python expression over variable var, value of name const)`` doing what the dumper of ``attr``
    does, for the generated per-plan functions; None when the dumper must be called. With ``native``
    the expression may leave naive datetimes, dates and UUIDs as they are, for orjson to write. The
    expression may raise IndexError where the dumper would not: on it, call the dumper.
    """
    py_type = _pony.attr_type(attr)
    if custom_codec(py_type) is not None:
        return None
    if py_type is Decimal:
        quantum = _pony.decimal_quantum(attr)
        if quantum is not None:
            return decimal_expression(var, const, quantum, may_raise=True), quantum
        return f"str({var})", None
    if native and py_type is dt.datetime:
        return (
            f"({var} if type({var}) is _datetime and {var}.tzinfo is None else {const}({var}))",
            _iso_dumper(py_type),
        )
    if native and py_type is dt.date:
        return f"({var} if type({var}) is _date else {const}({var}))", _iso_dumper(py_type)
    if native and py_type is uuid.UUID:
        return var, None
    if py_type in (dt.datetime, dt.date):
        # Pony hands back datetime and date objects on every backend (only time has the SQLite quirk)
        return f"({var}.isoformat() if type({var}) is not str else {const}({var}))", _iso_dumper(py_type)
    if py_type is uuid.UUID:
        return f"str({var})", None
    return None


# ---------------------------------------------------------------------------------------------------------
# Raw column value (as the driver returns it) -> JSON-safe value, for the query fast path


def raw_dumper(attr: Any, converter: Any, dump: Dump) -> Dump | None:
    """A function from a raw column value to the JSON form ``dump`` gives for the decoded value.

    Equivalent to ``dump(converter.dbval2val(converter.sql2py(raw)))``; the common builtin types skip
    the Python-level decoding. None means "the raw value is already the JSON form". The returned
    function is never called with None.
    """
    name = _pony.builtin_decoder_name(converter)
    py_type = _pony.attr_type(attr)
    if name is not None and custom_codec(py_type) is None:
        # Only Pony's own decoding happens between the driver and the value: skip what is a no-op.
        if py_type is int and name == "IntConverter":
            return None
        if py_type is str and name == "Converter":
            return None
        if py_type is bool:
            return bool
        if py_type is float and name == "RealConverter":
            return _float
        if py_type is Decimal and name in ("DecimalConverter", "SQLiteDecimalConverter"):
            quantum = _pony.decimal_quantum(attr)
            if quantum is None:
                return None if name == "DecimalConverter" else dump
            # Pony's SQLite decoding is Decimal(str(raw)).quantize(exp); PG and MySQL give Decimal
            return lambda v: str(Decimal(str(v)).quantize(quantum))
        if py_type is dt.datetime and name == "SQLiteDatetimeConverter":
            return _sqlite_datetime(converter, dump)
        if py_type in (dt.datetime, dt.date) and name in ("DatetimeConverter", "DateConverter"):
            return None  # naive values from PG/MySQL: orjson writes them exactly as isoformat() does
    sql2py, dbval2val = converter.sql2py, converter.dbval2val
    return lambda v: dump(dbval2val(sql2py(v), None))


def raw_inline(attr: Any, converter: Any, var: str, const: str) -> tuple[str, Any] | None:
    """Like :func:`raw_dumper`, as ``(expression over var, value of name const)`` for generated code.

    Only for Pony's own decoding of Decimal (the one hot type that needs work on every backend);
    None otherwise.
    """
    if _pony.attr_type(attr) is not Decimal or custom_codec(Decimal) is not None:
        return None
    quantum = _pony.decimal_quantum(attr)
    name = _pony.builtin_decoder_name(converter)
    if quantum is None or name is None:
        return None
    if name == "DecimalConverter":  # PG and MySQL: the driver gives Decimal
        return decimal_expression(var, const, quantum), quantum
    if name == "SQLiteDecimalConverter":  # Pony decodes Decimal(str(raw)).quantize(exp)
        return f"str(_Decimal(str({var})).quantize({const}))", quantum
    return None


def _sqlite_datetime(converter: Any, dump: Dump) -> Dump:
    # Pony writes 'YYYY-MM-DD HH:MM:SS.ffffff' on SQLite and parses it with strptime (slow); the ISO
    # form of that datetime is the same text with a 'T' and without zero microseconds. Any other text
    # takes Pony's own path.
    sql2py = converter.sql2py

    def decode(v: Any) -> Any:
        if type(v) is str and len(v) == 26 and v[10] == " " and v[19] == ".":
            # the isoformat() of what Pony parses from this text, without parsing it
            return v[:10] + "T" + (v[11:19] if v[20:] == "000000" else v[11:])
        return dump(sql2py(v))

    return decode


# ---------------------------------------------------------------------------------------------------------
# JSON value -> candidate Python value (Pony's own validation runs afterwards)


def value_loader(attr: Any) -> Load:
    """The function turning a JSON value into a candidate Python value of ``attr``; raises BadValue."""
    py_type = _pony.attr_type(attr)
    codec = custom_codec(py_type)
    if codec is not None:

        def load_custom(v: Any) -> Any:
            try:
                return codec.from_json(v)
            except (TypeError, ValueError) as exc:
                raise BadValue(str(exc)) from None

        return load_custom
    if isinstance(py_type, type) and issubclass(py_type, enum.Enum):
        return _enum(py_type)
    if py_type is bool:
        return _expect(lambda v: type(v) is bool, "a boolean", identity)
    if py_type is float:
        return _expect(lambda v: type(v) in (int, float), "a number", float)
    if isinstance(py_type, type) and issubclass(py_type, str):
        return _expect(lambda v: isinstance(v, str), "a string", identity)
    if py_type is Decimal:
        return _expect(lambda v: type(v) in (str, int, float), "a decimal number as a string", _decimal)
    if py_type is dt.datetime:
        return _expect(lambda v: isinstance(v, str), "an ISO 8601 date-time string", _iso(dt.datetime))
    if py_type is dt.date:
        return _expect(lambda v: isinstance(v, str), "an ISO 8601 date string", _iso(dt.date))
    if py_type is dt.time:
        return _expect(lambda v: isinstance(v, str), "an ISO 8601 time string", _iso(dt.time))
    if py_type is dt.timedelta:
        return _expect(lambda v: type(v) in (int, float), "a number of seconds", _seconds)
    if py_type is uuid.UUID:
        return _expect(lambda v: isinstance(v, str), "a UUID string", _uuid)
    if py_type is bytes:
        return _expect(lambda v: isinstance(v, str), "a base64 string", _b64)
    if _is_json_type(py_type):
        return identity
    if isinstance(py_type, type) and issubclass(py_type, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return _expect(lambda v: isinstance(v, str), "an IP address string", _ip(py_type))
    if isinstance(py_type, type) and issubclass(py_type, int):
        return _expect(lambda v: type(v) is int, "an integer", identity)
    return identity


def _expect(check: Callable[[Any], bool], expected: str, convert: Load) -> Load:
    def load(v: Any) -> Any:
        if not check(v):
            raise BadValue(f"expected {expected}, got {describe(v)}")
        try:
            return convert(v)
        except BadValue:
            raise
        except (ValueError, TypeError, OverflowError, InvalidOperation, binascii.Error):
            raise BadValue(f"expected {expected}, got {describe(v)}") from None

    return load


def _decimal(v: Any) -> Decimal:
    d = Decimal(repr(v)) if type(v) is float else Decimal(v)
    if not d.is_finite():
        raise BadValue(f"expected a finite decimal number, got {describe(v)}")
    return d


def _iso(kind: Any) -> Load:
    def parse(v: str) -> Any:
        text = v[:-1] + "+00:00" if v.endswith(("Z", "z")) else v
        value = kind.fromisoformat(text)
        if kind is dt.date and isinstance(value, dt.datetime):
            raise ValueError(v)  # caught by the loader: becomes BadValue, then a FieldError
        return value

    return parse


def _seconds(v: float) -> dt.timedelta:
    return dt.timedelta(seconds=v)


def _uuid(v: str) -> uuid.UUID:
    return uuid.UUID(v)


def _b64(v: str) -> bytes:
    return base64.b64decode(v.encode("ascii"), validate=True)


def _ip(py_type: Any) -> Load:
    return lambda v: py_type(v)


def _enum(py_type: Any) -> Load:
    allowed = [m.value for m in py_type]

    def load(v: Any) -> Any:
        try:
            return py_type(v)
        except ValueError:
            raise BadValue(f"expected one of {allowed!r}, got {describe(v)}") from None

    return load


# ---------------------------------------------------------------------------------------------------------
# JSON Schema of one value

_DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
_OFFSET = r"([+-][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{6})?)?)?"
_DATETIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?" + _OFFSET + "$"
_TIME_PATTERN = r"^[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?([+-][0-9]{2}:[0-9]{2})?$"


def value_schema(attr: Any) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one non-null serialized value of ``attr``."""
    py_type = _pony.attr_type(attr)
    codec = custom_codec(py_type)
    if codec is not None:
        return dict(codec.json_schema())
    if isinstance(py_type, type) and issubclass(py_type, enum.Enum):
        return {"enum": [m.value for m in py_type]}
    if py_type is bool:
        return {"type": "boolean"}
    if py_type is float:
        return {"type": ["number", "null"]}  # NaN and infinities serialize as null
    if isinstance(py_type, type) and issubclass(py_type, str):
        schema: dict[str, Any] = {"type": "string"}
        max_len = _pony.max_length(attr)
        if max_len:
            schema["maxLength"] = max_len
        return schema
    if py_type is Decimal:
        return {"type": "string", "pattern": _DECIMAL_PATTERN}
    if py_type is dt.datetime:
        return {"type": "string", "pattern": _DATETIME_PATTERN}
    if py_type is dt.date:
        return {"type": "string", "format": "date"}
    if py_type is dt.time:
        return {"type": "string", "pattern": _TIME_PATTERN}
    if py_type is dt.timedelta:
        return {"type": "number"}
    if py_type is uuid.UUID:
        return {"type": "string", "format": "uuid"}
    if py_type is bytes:
        return {"type": "string", "contentEncoding": "base64"}
    if _is_json_type(py_type):
        return {}
    if isinstance(py_type, type) and issubclass(py_type, ipaddress.IPv4Address):
        return {"type": "string", "format": "ipv4"}
    if isinstance(py_type, type) and issubclass(py_type, ipaddress.IPv6Address):
        return {"type": "string", "format": "ipv6"}
    if isinstance(py_type, type) and issubclass(py_type, int):
        return {"type": "integer"}
    return {}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` that also admits null."""
    if not schema or "null" in (schema.get("type") or ()):
        return schema
    return {"anyOf": [schema, {"type": "null"}]}
