"""Plain data to bytes and back, for caches shared across processes (Redis) and for stable keys.

JSON (via orjson) with a few tagged objects, so that what comes back is what went in: tuples stay
tuples, ``Decimal``/``datetime``/``date``/``time``/``timedelta``/``UUID``/``bytes`` keep their types, and
dictionaries keep non-string keys. Nothing executable is ever decoded (no pickle): a value read from a
shared Redis can at worst be wrong data, never code.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any

import orjson

from ..errors import DataError, OptionError

__all__ = ["decode", "encode", "from_plain", "to_plain"]

_INT64 = 2**63


def to_plain(value: Any) -> Any:
    """``value`` as JSON-native data (lists, string-keyed dicts, str, int, float, bool, None)."""
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is int:
        return value if -_INT64 <= value < _INT64 else {"~i": str(value)}
    if t is float:
        return value if math.isfinite(value) else {"~f": repr(value)}
    if t is tuple:
        return {"~t": [to_plain(v) for v in value]}
    if t is list:
        return [to_plain(v) for v in value]
    if t is dict:
        return {"~m": [[to_plain(k), to_plain(v)] for k, v in value.items()]}
    if t is Decimal:
        return {"~D": str(value)}
    if t is dt.datetime:
        return {"~dt": value.isoformat()}
    if t is dt.date:
        return {"~d": value.isoformat()}
    if t is dt.time:
        return {"~tm": value.isoformat()}
    if t is dt.timedelta:
        return {"~td": [value.days, value.seconds, value.microseconds]}
    if t is uuid.UUID:
        return {"~u": value.hex}
    if t is bytes or t is bytearray or t is memoryview:
        return {"~b": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (frozenset, set)):
        return {"~s": sorted((to_plain(v) for v in value), key=repr)}
    raise OptionError(
        f"cannot store a value of type {t.__name__} in a shared cache: cached results must be plain data "
        "(str, int, float, bool, None, Decimal, date/time types, UUID, bytes, and lists, tuples and "
        "dicts of those)"
    )


def from_plain(value: Any) -> Any:
    """The inverse of :func:`to_plain`."""
    t = type(value)
    if t is list:
        return [from_plain(v) for v in value]
    if t is not dict:
        return value
    ((tag, inner),) = value.items()
    if tag == "~t":
        return tuple(from_plain(v) for v in inner)
    if tag == "~m":
        return {from_plain(k): from_plain(v) for k, v in inner}
    if tag == "~D":
        return Decimal(inner)
    if tag == "~dt":
        return dt.datetime.fromisoformat(inner)
    if tag == "~d":
        return dt.date.fromisoformat(inner)
    if tag == "~tm":
        return dt.time.fromisoformat(inner)
    if tag == "~td":
        return dt.timedelta(days=inner[0], seconds=inner[1], microseconds=inner[2])
    if tag == "~u":
        return uuid.UUID(hex=inner)
    if tag == "~b":
        return base64.b64decode(inner)
    if tag == "~i":
        return int(inner)
    if tag == "~f":
        return float(inner)
    if tag == "~s":
        return frozenset(from_plain(v) for v in inner)
    raise DataError(
        f"unknown tag {tag!r} in cached data: the entry was written by another program or version"
    )


def encode(value: Any) -> bytes:
    """Serialize plain data (see module doc) to bytes; raises TypeError naming an unsupported type."""
    return orjson.dumps(to_plain(value))


def decode(data: bytes) -> Any:
    """The value :func:`encode` was given."""
    return from_plain(orjson.loads(data))
