"""Attribute types for Pony: a public custom-type API, Enum and value types, encrypted types.

* :class:`AttributeType` and :func:`register_type`: declare your own types.
* Any ``enum.Enum`` subclass, :class:`AwareDatetime`, ``ipaddress`` values (:class:`IPAddress`,
  :class:`IPNetwork`, or the concrete ``ipaddress`` classes) work on every attached Database.
* :class:`EncryptedStr`, :class:`EncryptedBytes`, :class:`EncryptedJson` with ``searchable=True`` and
  :func:`match` for generator queries.

Converters are installed per Database by ``ponykit.attach(db)``.
"""

from __future__ import annotations

from .base import AttributeType, json_codec, register_type, registered_types
from .builtin import AwareDatetime, EnumType, IPAddress, IPNetwork
from .encrypted import (
    EncryptedBytes,
    EncryptedJson,
    EncryptedStr,
    EncryptedType,
    lookup_index_ddl,
    lookup_patterns_for,
    match,
)

__all__ = [
    "AttributeType",
    "AwareDatetime",
    "EncryptedBytes",
    "EncryptedJson",
    "EncryptedStr",
    "EncryptedType",
    "EnumType",
    "IPAddress",
    "IPNetwork",
    "json_codec",
    "lookup_index_ddl",
    "lookup_patterns_for",
    "match",
    "register_type",
    "registered_types",
]
