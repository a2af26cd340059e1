"""The encrypted value types: what each holds, how it validates, and its plaintext bytes.

``encrypted`` (the public module) re-exports them beside the converter that encrypts their values.
"""

from __future__ import annotations

import base64
import datetime
import enum
import math
import uuid
from typing import Any, ClassVar

import orjson

from .. import _pony
from ..errors import (
    ValidationError,
    ValueTypeError,
)
from .base import AttributeType

__all__ = (
    "EncryptedBytes",
    "EncryptedJson",
    "EncryptedStr",
    "EncryptedType",
    "JsonRefused",
    "encrypted_codec",
)


def _forbid_in_queries(cls: type) -> None:
    # Pony's translator raises TypeError("Unsupported type <name>") for types it cannot normalize. Mapping
    # an encrypted type to a marker class that is just as unsupported keeps that behaviour (a comparison
    # in a generator query fails instead of silently matching nothing) and makes the message say why.
    marker = type(
        f"{cls.__name__} (an encrypted attribute cannot be used in a generator query: look values up with "
        "Entity.get(attr=value) or pk.types.match(Entity.attr, value) on a searchable attribute)",
        (),
        {},
    )
    _pony.register_type_normalization(cls, marker)


class EncryptedType(AttributeType):
    """Base of the encrypted types: a Python value, its plaintext bytes, and the envelope text stored."""

    __ponykit_sensitive__: ClassVar[bool] = True
    storage: ClassVar[type] = str
    options: ClassVar[tuple[str, ...]] = ("searchable", "max_len")
    queryable: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _forbid_in_queries(cls)

    def encode(self, value: Any) -> bytes:
        """The plaintext bytes of a validated value."""
        raise NotImplementedError  # abstract: every concrete EncryptedType defines it

    def decode(self, data: bytes) -> Any:
        """The value of plaintext bytes."""
        raise NotImplementedError  # abstract: every concrete EncryptedType defines it


class EncryptedStr(EncryptedType):
    """An encrypted ``str``: ``Required(pk.types.EncryptedStr)``, optionally ``searchable=True``."""

    python_type: ClassVar[type] = str

    def validate(self, value: Any) -> Any:
        """The str itself (no stripping: the exact text is encrypted)."""
        if not isinstance(value, str):
            raise ValueTypeError(f"expected str, got {type(value).__name__}")
        return value

    def encode(self, value: Any) -> bytes:
        """UTF-8 bytes."""
        return value.encode("utf-8", "surrogatepass")  # type: ignore[no-any-return]

    def decode(self, data: bytes) -> Any:
        """UTF-8 text."""
        return data.decode("utf-8", "surrogatepass")


class EncryptedBytes(EncryptedType):
    """Encrypted ``bytes``: ``Required(pk.types.EncryptedBytes)``. JSON form: base64 text."""

    python_type: ClassVar[type] = bytes

    def validate(self, value: Any) -> Any:
        """Bytes (bytearray and memoryview are copied into bytes)."""
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        if not isinstance(value, bytes):
            raise ValueTypeError(f"expected bytes, got {type(value).__name__}")
        return value

    def encode(self, value: Any) -> bytes:
        """The bytes."""
        return value  # type: ignore[no-any-return]

    def decode(self, data: bytes) -> Any:
        """The bytes."""
        return data

    def to_json(self, value: Any) -> Any:
        """Base64 text."""
        return base64.b64encode(value).decode("ascii")

    def from_json(self, data: Any) -> Any:
        """Bytes from base64 text."""
        return base64.b64decode(data)

    def json_schema(self) -> dict[str, Any]:
        """A base64 string."""
        return {"type": "string", "contentEncoding": "base64"}


class JsonRefused(ValidationError):
    """A value JSON can hold only by changing it: the message names what kind of value (never the value)."""


def _json_refusal(value: Any) -> str | None:
    """What in ``value`` would not come back equal from JSON, or None when it round-trips exactly."""
    # Exact JSON types first (the common case). orjson has already checked int range and depth.
    cls = value.__class__
    if value is None or cls is str or cls is bool or cls is int:
        return None
    if isinstance(value, enum.Enum):
        return "an Enum member (it would come back as its plain value)"
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return "a NaN or infinite float (JSON has no such number: it would come back as None)"
    if isinstance(value, (str, int)):
        return None
    if isinstance(value, dict):
        for item in value.values():
            found = _json_refusal(item)
            if found is not None:
                return found
        return None
    if isinstance(value, list):
        for item in value:
            found = _json_refusal(item)
            if found is not None:
                return found
        return None
    if isinstance(value, tuple):
        return "a tuple (it would come back as a list)"
    if isinstance(value, (datetime.date, datetime.time, uuid.UUID)):
        return f"a {cls.__name__} (it would come back as a string)"
    return f"a {cls.__name__} (it would come back as another type)"


class EncryptedJson(EncryptedType):
    """Encrypted JSON (dict, list, str, numbers, bools, None): ``Required(pk.types.EncryptedJson)``.

    Serialized with sorted keys, so equal documents have equal blind indexes. Changes made in place
    are not tracked: assign a new value. Values come back equal (``==``) to what was stored, or are
    refused when assigned: NaN and infinite floats, tuples, dates, times, UUIDs, Enum members and other
    types JSON would turn into something else raise :class:`~ponykit.errors.ValidationError` (convert
    them first, e.g. ``d.isoformat()``, ``str(u)``, ``list(t)``). ``Decimal`` and sets raise TypeError.
    """

    python_type: ClassVar[type] = object

    def validate(self, value: Any) -> Any:
        """The value, if it serializes to JSON and comes back equal; JsonRefused or TypeError otherwise."""
        try:
            orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            raise ValueTypeError(f"expected a JSON-serializable value, got {type(value).__name__}") from None
        refused = _json_refusal(value)
        if refused is not None:
            raise JsonRefused(
                f"EncryptedJson cannot store {refused}; convert it to a JSON type before assigning"
            )
        return value

    def is_python_value(self, value: Any) -> bool:
        """Always True: the stored form is never handled by this type."""
        return True

    def encode(self, value: Any) -> bytes:
        """Compact JSON with sorted keys."""
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)

    def decode(self, data: bytes) -> Any:
        """Parsed JSON."""
        return orjson.loads(data)

    def to_json(self, value: Any) -> Any:
        """The value itself."""
        return value

    def from_json(self, data: Any) -> Any:
        """The value itself."""
        return self.validate(data)

    def json_schema(self) -> dict[str, Any]:
        """Any JSON."""
        return {}


def encrypted_codec(py_type: type) -> AttributeType | None:
    """The JSON codec of an encrypted type declared as an attribute type (``types`` lists it)."""
    if isinstance(py_type, type) and issubclass(py_type, EncryptedType) and py_type is not EncryptedType:
        return py_type()
    return None
