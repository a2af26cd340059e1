"""What ``publish()`` stores as a message's payload: JSON text, exact, without sensitive values.

The rules (``docs/outbox.md``):

* ``dict`` (keys must be ``str``), ``list``/``tuple``, ``str``, ``int``, finite ``float``, ``bool`` and
  ``None`` are stored as JSON and read back equal (``orjson.loads(message.payload) == payload``, tuples
  becoming lists). NaN and infinities, ints outside 64 bits and non-``str`` keys are refused: JSON (or
  the consumers' parsers) would not give the same value back.
* An entity object becomes its ``to_dict()`` (ponykit's serializer: Decimals as exact text, datetimes
  as ISO 8601, UUIDs as text ...). An entity with a sensitive attribute (``ponykit.security.sensitive``
  or an encrypted type) is refused unless ``allow_sensitive=True``: a message leaves the database for a
  broker, its consumers and their logs.
* ``Decimal`` becomes its exact text, ``datetime``/``date``/``time`` ISO 8601 text, ``UUID`` canonical
  text, ``Enum`` its value, as ponykit's ``to_json`` writes them.
* ``bytes`` (or ``bytearray``/``memoryview``) are taken as JSON text already encoded (UTF-8): they are
  checked to be one valid JSON document and stored as given.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson

from .. import _pony
from ..errors import OutboxError
from ..security.sensitive import is_sensitive
from ..serialization import to_dict

__all__ = ["encode_headers", "encode_payload"]

_INT_MIN = -(2**63)
_UINT_MAX = 2**64 - 1


def encode_payload(payload: Any, *, topic: str, allow_sensitive: bool = False) -> str:
    """The JSON text of ``payload`` (see the module's rules); :class:`OutboxError` when it cannot be."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        raw = bytes(payload)
        try:
            orjson.loads(raw)
            return raw.decode("utf-8")
        except (orjson.JSONDecodeError, UnicodeDecodeError):
            raise OutboxError(
                f"publish({topic!r}, ...): a bytes payload is taken as encoded JSON, but these "
                f"{len(raw)} bytes are not one valid UTF-8 JSON document; pass the data itself (a dict, "
                "a list ...) and ponykit encodes it"
            ) from None
    value = _safe(payload, topic, allow_sensitive, "payload")
    try:
        return orjson.dumps(value).decode("utf-8")
    except (TypeError, orjson.JSONEncodeError) as exc:
        # A str with a lone surrogate: not encodable as UTF-8, no JSON text can carry it.
        raise OutboxError(
            f"publish({topic!r}, ...): the payload cannot be encoded as JSON ({type(exc).__name__}); "
            "strings must be valid Unicode (no lone surrogates)"
        ) from None


def encode_headers(headers: Mapping[str, str] | None, *, topic: str) -> str | None:
    """The JSON text of ``headers`` (a mapping of text to text), or None for no headers."""
    if headers is None:
        return None
    if not isinstance(headers, Mapping):
        raise OutboxError(
            f"publish({topic!r}, headers=...) takes a mapping of str to str, got {type(headers).__name__}"
        )
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise OutboxError(
                f"publish({topic!r}, headers=...) takes a mapping of str to str; header {name!r} is a "
                f"{type(name).__name__} -> {type(value).__name__}: convert the value to text"
            )
    return orjson.dumps(dict(headers)).decode("utf-8") if headers else None


def _safe(value: Any, topic: str, allow_sensitive: bool, path: str) -> Any:
    """``value`` as JSON-native data (dict/list/str/int/float/bool/None), checked to round-trip."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _UINT_MAX:
            raise OutboxError(
                f"publish({topic!r}, ...): {path} is an integer outside the 64-bit range, which JSON "
                "consumers do not read back exactly; send it as a string"
            )
        return int(value)  # an IntEnum or int subclass: its plain value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise OutboxError(
                f"publish({topic!r}, ...): {path} is {value!r}, which JSON cannot represent; send None or "
                "a string"
            )
        return float(value)
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise OutboxError(
                    f"publish({topic!r}, ...): {path} has a key of type {type(k).__name__}; JSON object "
                    "keys are text: convert the keys to str"
                )
            result[k] = _safe(v, topic, allow_sensitive, f"{path}[{k!r}]")
        return result
    if isinstance(value, (list, tuple)):
        return [_safe(v, topic, allow_sensitive, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise OutboxError(f"publish({topic!r}, ...): {path} is Decimal({str(value)!r}), not a number")
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return _safe(value.value, topic, allow_sensitive, path)
    if _pony.is_entity_instance(value):
        return _entity(value, topic, allow_sensitive)
    raise OutboxError(
        f"publish({topic!r}, ...): {path} is a {type(value).__name__}, which has no JSON form; pass dicts, "
        "lists, str, int, float, bool, None, Decimal, date/time, UUID, Enum or entity objects"
    )


def _entity(obj: Any, topic: str, allow_sensitive: bool) -> Any:
    entity = type(obj)
    if not allow_sensitive:
        for attr in _pony.entity_attributes(entity):
            if is_sensitive(attr):
                raise OutboxError(
                    f"publish({topic!r}, ...): the payload holds a {entity.__name__} object, whose "
                    f"attribute {_pony.attr_info(attr).name!r} is sensitive; messages leave the database "
                    "for a broker and its consumers. Publish a dict of the attributes the consumers need, "
                    "or pass allow_sensitive=True"
                )
    # to_dict's values are JSON-safe already (floats: NaN becomes None, as to_json does).
    return to_dict(obj, include_sensitive=allow_sensitive)
