"""Values as Pony validates, encodes and decodes them: one attribute's value to its column(s) and back, the
errors Pony raises for bad input, and whether a value survives a round trip through a column unchanged.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pony.orm.core as _core
import pony.orm.dbapiprovider as _dbapiprovider
from pony.orm.dbapiprovider import BoolConverter, Converter, IntConverter, RealConverter
from pony.orm.ormtypes import LongStr

from ._typing import Attribute

__all__ = [
    "DEFAULT",
    "builtin_decoder_name",
    "column_value",
    "column_value_check",
    "converter_without_option",
    "decimal_limits",
    "decimal_quantum",
    "decode_value",
    "encode_value",
    "input_errors",
    "untracked",
    "validate_attribute",
]


def builtin_decoder_name(converter: Any) -> str | None:
    """The name of the Pony class whose ``sql2py`` decodes for ``converter``, if decoding is Pony's own.

    None unless both ``sql2py`` and ``dbval2val`` come from Pony's modules and ``dbval2val`` is the
    base ``Converter``'s no-op: only then may a fast path skip what such a converter would do.
    """
    sql2py_owner = _method_owner(converter, "sql2py")
    dbval2val_owner = _method_owner(converter, "dbval2val")
    if not all(k.__module__.startswith("pony.") for k in (sql2py_owner, dbval2val_owner)):
        return None
    if dbval2val_owner.__name__ != "Converter":
        return None
    return sql2py_owner.__name__


def _method_owner(converter: Any, method: str) -> type:
    return next(k for k in type(converter).__mro__ if method in k.__dict__)


DEFAULT: Any = _core.DEFAULT  # "not given": encode_value then applies the attribute's default


def encode_value(attr: Attribute, value: Any) -> tuple[Any, ...]:
    """The column values Pony would bind when ``value`` is assigned to ``attr``.

    Runs the attribute's own validation (``validate`` of the converter, ``py_check``, min/max/max_len,
    required checks) and then ``val2dbval`` and ``py2sql``, exactly as an INSERT through an entity would.
    Relations accept an entity instance or its primary key and give the target's primary-key columns.
    Pass :data:`DEFAULT` for a value that was not given: the attribute's default applies (``''`` for an
    ``Optional(str)``, as Pony stores it).
    """
    val = attr.validate(value, None, attr.entity)
    if val is None:
        return (None,) * max(len(attr.columns), 1)
    if attr.reverse is not None:  # a to-one relation: bind the related object's primary key columns
        raw = val._get_raw_pkval_()
        return tuple(c.py2sql(c.val2dbval(v, None)) for c, v in zip(attr.converters, raw, strict=True))
    converter = attr.converters[0]
    return (converter.py2sql(converter.val2dbval(val, None)),)


def column_value(attr: Attribute, value: Any) -> Any:
    """The column value Pony binds for ``value`` of a single-column, non-relation attribute.

    For values an object already holds in its session (Pony validated them when they were loaded or
    set), so they are not validated again: only ``val2dbval`` and ``py2sql`` run, as in
    :func:`encode_value`.
    """
    if value is None:
        return None
    converter = attr.converters[0]
    return converter.py2sql(converter.val2dbval(value, None))


def decode_value(attr: Attribute, raw: Any) -> Any:
    """The Python value Pony would give ``attr`` for a raw column value read from the driver."""
    if raw is None:
        return None
    converter = attr.converters[0]
    return converter.dbval2val(converter.sql2py(raw), None)


def is_identity(method: Any, base: Any) -> bool:
    """True if ``method`` is ``base`` bound to an object (a converter step that was not overridden)."""
    return getattr(method, "__func__", None) is base


# Python types whose values Pony hands over as they are: a value must have exactly that type (an int
# is not a float, True is not an int, a datetime is not a date).
_EXACT_TYPES = {
    bool: bool,
    int: int,
    float: float,
    str: str,
    LongStr: str,
    bytes: bytes,
    Decimal: Decimal,
    dt.date: dt.date,
    dt.datetime: dt.datetime,
    dt.time: dt.time,
    dt.timedelta: dt.timedelta,
    uuid.UUID: uuid.UUID,
}


_BYTES_LIKE = (bytes, bytearray, memoryview)


# Pony's sql2py steps that give a value of the attribute's own type back unchanged.
_KEEPS_OWN_TYPE = frozenset(
    {Converter.sql2py, IntConverter.sql2py, BoolConverter.sql2py, RealConverter.sql2py}
)


_INT64 = 2**63


def _same_column_value(back: Any, value: Any) -> bool:
    if isinstance(back, _BYTES_LIKE) and type(value) is bytes:
        return bytes(back) == value
    return type(back) is type(value) and back == value


def column_value_check(attr: Attribute, dialect: str) -> Callable[[Any], bool]:
    """A test that ``value`` is a column value :func:`column_value` can give for ``attr``.

    For values that come from outside (a keyset cursor): the value is read back as Pony reads a
    column (``sql2py``, ``dbval2val``), must then have exactly the attribute's type (for Pony's own
    types), and must convert back to itself, same type and value; an int must fit the column (its
    ``size``, 32 bits by default; 64 on SQLite), and values no row of this backend can hold (NaN, an
    infinite float on MySQL, a NUL character on PostgreSQL) are refused. None is accepted only for a
    nullable attribute.
    """
    converter = attr.converters[0]
    py_type = attr.py_type
    exact = _EXACT_TYPES.get(py_type)
    # Only the converter steps that do something: most are the base class's identity.
    sql2py = None if is_identity(converter.sql2py, Converter.sql2py) else converter.sql2py
    dbval2val = None if is_identity(converter.dbval2val, Converter.dbval2val) else converter.dbval2val
    val2dbval = None if is_identity(converter.val2dbval, Converter.val2dbval) else converter.val2dbval
    py2sql = None if is_identity(converter.py2sql, Converter.py2sql) else converter.py2sql
    nullable = bool(attr.nullable) and not attr.is_pk
    low, high = -_INT64, _INT64 - 1
    size = getattr(converter, "size", None)
    # An INTEGER column of SQLite holds 64 bits whatever its declared size; other backends hold the
    # size Pony declared (32 bits for a plain int).
    if size and dialect != "sqlite":
        unsigned = bool(getattr(converter, "unsigned", False))
        low, high = (0, 2**size - 1) if unsigned else (-(2 ** (size - 1)), 2 ** (size - 1) - 1)

    if (
        exact in (int, bool, float, str)
        and dbval2val is None
        and val2dbval is None
        and py2sql is None
        and getattr(converter.sql2py, "__func__", None) in _KEEPS_OWN_TYPE
    ):
        # Pony's own converter for a plain type: the value must be of that type, and nothing else
        # converts it, so the generic read-back below reduces to a type test (a cursor's usual case).
        def plain(value: Any) -> bool:
            kind = type(value)
            if kind is not exact:
                return value is None and nullable
            if kind is int:
                return bool(low <= value <= high)
            if kind is float:
                return math.isfinite(value) or (dialect != "mysql" and not math.isnan(value))
            return kind is bool or dialect != "postgres" or "\x00" not in value

        return plain

    def check(value: Any) -> bool:
        if value is None:
            return nullable
        try:
            python = value if sql2py is None else sql2py(value)
            if dbval2val is not None:
                python = dbval2val(python, None)
            # Pony's own types: exactly that type. Other types (ponykit's, enums) may read back as a
            # value of another class (AwareDatetime gives a datetime): the round trip decides.
            if exact is not None and type(python) is not exact:
                return False
            if exact is int and not low <= python <= high:
                return False
            if exact is float and not math.isfinite(python) and (dialect == "mysql" or math.isnan(python)):
                return False  # NaN is no sort position; MySQL holds no infinite float
            if exact is Decimal and not python.is_finite():
                return False
            if exact is str and dialect == "postgres" and "\x00" in python:
                return False
            back = python if val2dbval is None else val2dbval(python, None)
            if py2sql is not None:
                back = py2sql(back)
        except Exception:  # noqa: BLE001 - any failure to read the value back means it is not one
            return False
        return _same_column_value(back, value)

    return check


def decimal_quantum(attr: Attribute) -> Any:
    """The ``Decimal`` exponent Pony quantizes ``attr``'s values to (``Decimal('0.01')`` for scale 2)."""
    converter = attr.converters[0] if attr.converters else None
    exp = getattr(converter, "exp", None)
    if exp is None and converter is not None and getattr(converter, "scale", None) is not None:
        from decimal import Decimal

        exp = Decimal(10) ** -converter.scale
    return exp


def decimal_limits(attr: Attribute) -> tuple[int, int] | None:
    """``(precision, scale)`` of a ``Decimal`` attribute stored by Pony's own Decimal converter (the
    column's ``DECIMAL(precision, scale)``), or None for other attributes and custom Decimal types."""
    converter = attr.converters[0] if attr.converters else None
    if not isinstance(converter, _dbapiprovider.DecimalConverter):
        return None
    precision, scale = getattr(converter, "precision", None), getattr(converter, "scale", None)
    if not isinstance(precision, int) or not isinstance(scale, int):
        return None
    return precision, scale


def untracked(value: Any) -> Any:
    """A plain copy of a ``Json`` attribute value (Pony wraps them in change-tracking dict/list types)."""
    get = getattr(value, "get_untracked", None)
    return get() if get is not None else value


def validate_attribute(attr: Attribute, value: Any) -> Any:
    """Validate ``value`` for ``attr`` with Pony's own checks: converter ``validate``, ``py_check``,
    min/max/max_len, required and nullability. Returns the value Pony would store; raises Pony's
    ``ValueError``/``TypeError`` otherwise. Relations take an instance or a raw primary key.
    """
    return attr.validate(value, None, attr.entity)


def input_errors() -> tuple[type[BaseException], ...]:
    """What Pony raises for bad values when an object is created or set: ``ValueError``/``TypeError``
    from validation and ``CacheIndexError`` (an ``OrmError``) for a unique value already in the
    identity map."""
    return (ValueError, TypeError, _core.CacheIndexError)


_MISSING = object()


def converter_without_option(cls: type, provider: Any, py_type: type, attr: Attribute, name: str) -> Any:
    """``cls(provider, py_type, attr)`` with ponykit's option ``name`` hidden from it.

    Pony's converters refuse options they do not know; the option stays on the attribute afterwards (a
    failed ``generate_mapping`` may be retried).
    """
    kwargs = attr.kwargs
    value = kwargs.pop(name, _MISSING)
    try:
        return cls(provider, py_type, attr)
    finally:
        if value is not _MISSING:
            kwargs[name] = value
