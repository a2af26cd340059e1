"""Attribute types for Pony: a public custom-type API, Enum and value types, encrypted types.

* :class:`AttributeType` and :func:`register_type`: declare your own types.
* Any ``enum.Enum`` subclass, :class:`AwareDatetime`, ``ipaddress`` values (:class:`IPAddress`,
  :class:`IPNetwork`, or the concrete ``ipaddress`` classes) work on every attached Database.
* :class:`EncryptedStr`, :class:`EncryptedBytes`, :class:`EncryptedJson` with ``searchable=True`` and
  :func:`match` for generator queries.

Declarations are process-wide (one registry, ``types.base.registry``, which refuses a second
registration of a type unless ``replace=True``); the converters made from them are installed per Database
by ``ponykit.attach(db)``, which calls :func:`install`.
"""

from __future__ import annotations

import enum

from .._kit import Kit
from . import _bridge, _encrypted_values, builtin, encrypted
from .base import AttributeType, json_codec, register_type, registered_types, registry
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

# The package wires its own parts here, once, when every part is imported: no submodule registers anything
# as a side effect of being imported, and the order is written down in one place.
for _py_type, _type_class in builtin.BUILTIN_TYPES:
    registry.register(_py_type, _type_class)
del _py_type, _type_class
# Tried in this order by json_codec() for types not registered one by one.
registry.codec_factories = (builtin.enum_codec, _encrypted_values.encrypted_codec)


def install(kit: Kit) -> None:
    """Install every type's converter on ``kit.db`` (one of ``attach()``'s installers; idempotent).

    Registered types first (again at every ``attach()``: that picks up types registered since), then
    the Enum converter, then the encrypted types (converter, lookup operation, index renderer), each of
    these two once per Database. Converters end up in subclass-first order whatever the order.
    """
    _bridge.install(kit)
    if enum.Enum not in kit.converters:
        builtin.install_enum(kit)
    if EncryptedType not in kit.converters:
        encrypted.install_encrypted(kit)
