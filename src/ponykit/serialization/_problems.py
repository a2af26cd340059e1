"""Input problems in Pydantic's vocabulary: the ``type`` and ``ctx`` of a :class:`FieldError`.

``from_dict``/``update_from`` and the Pydantic models of ``pydantic_model`` check the same constraints
(``max_len``, non-empty ``Required`` strings, ``min``/``max`` and the int column's range, Decimal
precision and scale, Enum members, JSON types); this module says which Pydantic error each refusal
is, so a client sees the same ``loc``/``type``/``ctx`` from both. The checks run in Pydantic's order
for one value: type, then (Decimal) digits, places and whole digits, then length or range; one error
per field, as Pydantic reports.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any

from .. import _pony
from ..security.sensitive import is_sensitive, mask
from ._codec import custom_codec

__all__ = ()

# The Pydantic error type for a value of the wrong JSON type, per attribute type. int, str, bool and
# float are strict (from_dict takes no "5" for an int); a string for the others is parsed.
_TYPE_ERRORS: dict[Any, tuple[str, str]] = {
    # py_type: (wrong JSON type, a string that does not parse)
    int: ("int_type", "int_type"),
    str: ("string_type", "string_type"),
    bool: ("bool_type", "bool_type"),
    float: ("float_type", "float_type"),
    Decimal: ("decimal_type", "decimal_parsing"),
    dt.datetime: ("datetime_type", "datetime_parsing"),
    dt.date: ("date_type", "date_parsing"),
    dt.time: ("time_type", "time_parsing"),
    dt.timedelta: ("time_delta_type", "time_delta_parsing"),
    uuid.UUID: ("uuid_type", "uuid_parsing"),
    bytes: ("bytes_type", "bytes_type"),
}


def enum_expected(py_type: Any) -> str:
    """Pydantic's ``ctx["expected"]`` for an Enum: ``"'a', 'b' or 'c'"``."""
    shown = [repr(m.value) for m in py_type]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def type_error(attr: Any, value: Any) -> tuple[str, dict[str, Any] | None]:
    """``(type, ctx)`` for ``value`` refused by the JSON rule of ``attr`` (or of a key leaf)."""
    py_type = _pony.attr_type(attr)
    if isinstance(py_type, type) and issubclass(py_type, enum.Enum):
        return "enum", {"expected": enum_expected(py_type)}
    if py_type is Decimal and isinstance(value, str):
        parsed = _parse_decimal(value)
        if parsed is not None and not parsed.is_finite():
            return "finite_number", None
    kinds = _TYPE_ERRORS.get(py_type)
    if kinds is None and isinstance(py_type, type) and not issubclass(py_type, bool):
        # str and int subclasses (LongStr, a size-tagged int) take their base's rule
        kinds = next((_TYPE_ERRORS[k] for k in (str, int) if issubclass(py_type, k)), None)
    if kinds is not None:
        wrong_type, unparsable = kinds
        return (unparsable if isinstance(value, str) else wrong_type), None
    return "value_error", None


def _parse_decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except ArithmeticError:
        return None


def is_text(attr: Any) -> bool:
    """True for an attribute whose values are strings (str, LongStr, an encrypted str; not an Enum)."""
    py_type = _pony.attr_type(attr)
    if isinstance(py_type, type) and issubclass(py_type, enum.Enum):
        return False
    if isinstance(py_type, type) and issubclass(py_type, str):
        return True
    return _pony.max_length(attr) is not None and _is_text_type(py_type)


def _is_text_type(py_type: Any) -> bool:
    codec = custom_codec(py_type)
    schema = dict(codec.json_schema()) if codec is not None else {}
    return schema.get("type") == "string"


def decimal_digits(value: Decimal) -> tuple[int, int]:
    """``(digits, decimals)`` of a finite Decimal as Pydantic counts them (normalized: ``1.500`` has one
    decimal; ``1E-7`` has seven decimals and seven digits)."""
    normalized = value.normalize()
    _, digit_tuple, exponent = normalized.as_tuple()
    assert isinstance(exponent, int)  # finite: checked by the loader
    if exponent >= 0:
        return len(digit_tuple) + exponent, 0
    decimals = -exponent
    return max(len(digit_tuple), decimals), decimals


def constraint_error(attr: Any, value: Any, *, required: bool) -> tuple[str, str, dict[str, Any]] | None:
    """``(type, msg, ctx)`` when the loaded, non-None ``value`` breaks a constraint of ``attr`` that
    Pydantic also checks, else None. ``msg`` never holds a sensitive or encrypted value."""
    hidden = is_sensitive(attr)  # declared sensitive, or of a sensitive (encrypted) type
    label = _pony.attr_label(attr)
    if isinstance(value, str) and is_text(attr):
        if _pony.attr_autostrip(attr):
            value = value.strip()  # what Pony checks and stores: "\r" is an empty string to it
        max_len = _pony.max_length(attr)
        if max_len is not None and len(value) > max_len:
            given = "a longer value (not shown)" if hidden else f"{len(value)} characters"
            msg = f"too long: expected at most {max_len} characters for {label}, got {given}"
            return "string_too_long", msg, {"max_length": max_len}
        if required and value == "":
            msg = f"{label} is required: expected a non-empty string, got an empty string"
            return "string_too_short", msg, {"min_length": 1}
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return None
    shown = mask(value) if hidden else repr(str(value) if isinstance(value, Decimal) else value)
    limits = _pony.decimal_limits(attr) if isinstance(value, Decimal) else None
    if limits is not None and isinstance(value, Decimal) and value.is_finite():
        precision, scale = limits
        digits, decimals = decimal_digits(value)
        column = f"{label}, a Decimal({precision}, {scale})"
        whole = precision - scale
        too_many_whole = f"expected at most {whole} digits before the point for {column}, got {shown}"
        too_many_places = (
            f"expected at most {scale} digits after the point for {column}, got {shown}; round it first"
        )
        # one error per value, named as Pydantic names it; the message says which part is too long
        if digits > precision:
            msg = too_many_whole if digits - decimals > whole else too_many_places
            return "decimal_max_digits", msg, {"max_digits": precision}
        if decimals > scale:
            return "decimal_max_places", too_many_places, {"decimal_places": scale}
        if digits - decimals > whole:
            return "decimal_whole_digits", too_many_whole, {"whole_digits": whole}
    limits_ = _pony.value_limits(attr)
    if limits_.min is not None and value < limits_.min:
        msg = f"below the minimum: expected a number >= {limits_.min} for {label}, got {shown}"
        return "greater_than_equal", msg, {"ge": limits_.min}
    if limits_.max is not None and value > limits_.max:
        msg = f"above the maximum: expected a number <= {limits_.max} for {label}, got {shown}"
        return "less_than_equal", msg, {"le": limits_.max}
    return None
