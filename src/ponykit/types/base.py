"""The public custom-type API: ``AttributeType``, the type registry, ``register_type`` and ``json_codec``.

A type declares the Python values it holds (``python_type``), the primitive it is stored as
(``storage``: str, int, float, Decimal, bytes, date, datetime or Json) and three conversions
(``validate``, ``to_db``, ``from_db``). Declarations go into one process-wide :class:`TypeRegistry`
(``registry``), which refuses a second registration of a type unless it is given ``replace=True``.
``attach(db)`` turns every registered type into a Pony converter for that Database only
(``types._bridge``): a subclass of the dialect's own converter for the storage type, so DDL, driver
binding and reading back follow the backend.

Queries: Pony's translator only knows primitive types. For types whose storage is a primitive with the
same equality (``queryable = True``, the default), ponykit tells the translator to treat the type as its
storage type and installs, on the attached Database, parameter converters that turn such values into
their storage form before binding. So ``select(o for o in Order if o.price == Money("9.99"))`` works.
"""

from __future__ import annotations

import base64
import datetime as _dt
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any, ClassVar

from pony.orm import Json

from .. import _pony
from .._kit import attached_databases, find_kit
from ..errors import ConfigurationError, OptionError, ValueTypeError

__all__ = [
    "QUERYABLE_STORAGE",
    "AttributeType",
    "CodecFactory",
    "TypeRegistry",
    "json_codec",
    "register_type",
    "registered_types",
    "registry",
]

_STORAGE_TYPES: tuple[type, ...] = (str, int, float, Decimal, bytes, _dt.date, _dt.datetime, Json)
# Storage types whose Pony converter binds the stored value unchanged (val2dbval is the identity), so a
# query parameter can be encoded by ``to_db`` alone.
QUERYABLE_STORAGE: tuple[type, ...] = (str, int, float, Decimal, bytes, _dt.date, _dt.datetime)


class AttributeType:
    """Base class of attribute types: subclass it and register it with :func:`register_type`.

    Class attributes: ``python_type`` (the type of Python values), ``storage`` (the stored primitive),
    ``options`` (extra keyword options the type accepts on ``Required(...)``), ``queryable`` (whether
    generator queries may compare the attribute with Python values). An instance is made per attribute
    with the options given there, and one with no options serves JSON encoding.

    Override ``to_db`` and ``from_db`` (and usually ``validate``); ``to_json``/``from_json``/``json_schema``
    have defaults derived from the storage type. Raise ``TypeError`` or ``ValueError`` from ``validate``;
    ponykit adds the entity and attribute to the message.
    """

    python_type: ClassVar[type | tuple[type, ...]] = object
    storage: ClassVar[type] = str
    options: ClassVar[tuple[str, ...]] = ()
    queryable: ClassVar[bool] = True
    #: True when one value object always encodes to the same stored value (``validate`` then ``to_db`` have
    #: no randomness and read no state): a bulk write then encodes a value repeated down a column once
    #: (one timestamp for a whole batch). Never true for an encrypting type.
    deterministic: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - set(self.options)
        if unknown:
            raise OptionError(
                f"{type(self).__name__} has no option {sorted(unknown)[0]!r}; its options are "
                f"{', '.join(self.options) or 'none'}"
            )
        self.config = options

    @classmethod
    def type_name(cls) -> str:
        """A name for messages: the Python type's name, or the class name."""
        pt = cls.python_type
        return pt.__name__ if isinstance(pt, type) and pt is not object else cls.__name__

    def validate(self, value: Any) -> Any:
        """Check (and normalise) a Python value given by the user; return the value to keep."""
        if not isinstance(value, self.python_type):
            # The converter adds the entity and attribute (a subclass's plain TypeError works as well).
            raise ValueTypeError(f"expected {self.type_name()}, got {type(value).__name__}")
        return value

    def is_python_value(self, value: Any) -> bool:
        """True if ``value`` is a Python value (to encode with ``to_db``) rather than a stored one."""
        storage = bytes if self.storage is bytes else self.storage
        return isinstance(value, self.python_type) and not isinstance(value, storage)

    def to_db(self, value: Any) -> Any:
        """The storage value of a validated Python value."""
        return value

    def from_db(self, value: Any) -> Any:
        """The Python value of a storage value read from the database."""
        return value

    # -- JSON (used by ponykit.serialization) --------------------------------------------------------

    def to_json(self, value: Any) -> Any:
        """A JSON-safe form of a Python value (default: derived from its storage value)."""
        stored = self.to_db(value)
        if isinstance(stored, (bool, int, float, str)) or stored is None:
            return stored
        if isinstance(stored, (_dt.date, _dt.datetime)):
            return stored.isoformat()
        if isinstance(stored, Decimal):
            return str(stored)
        if isinstance(stored, (bytes, bytearray)):
            return base64.b64encode(bytes(stored)).decode("ascii")
        return stored  # dict / list for Json storage

    def from_json(self, data: Any) -> Any:
        """The Python value of what :meth:`to_json` produced."""
        storage = self.storage
        if storage is Decimal:
            data = Decimal(data)
        elif storage is bytes and isinstance(data, str):
            data = base64.b64decode(data)
        elif storage is _dt.datetime and isinstance(data, str):
            data = _dt.datetime.fromisoformat(data)
        elif storage is _dt.date and isinstance(data, str):
            data = _dt.date.fromisoformat(data)
        return self.validate(self.from_db(data))

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema fragment of :meth:`to_json`'s output."""
        storage = self.storage
        if storage is bool:
            return {"type": "boolean"}
        if storage is int:
            return {"type": "integer"}
        if storage is float:
            return {"type": "number"}
        if storage is Decimal:
            return {"type": "string", "format": "decimal"}
        if storage is bytes:
            return {"type": "string", "contentEncoding": "base64"}
        if storage is _dt.datetime:
            return {"type": "string", "format": "date-time"}
        if storage is _dt.date:
            return {"type": "string", "format": "date"}
        if storage is Json:
            return {}
        return {"type": "string"}


# ---------------------------------------------------------------------------------------------------------
# Registry

#: Makes the JSON codec of a family of declared types registered as a whole (every ``enum.Enum`` subclass,
#: every encrypted type), or returns None for a type it does not handle.
CodecFactory = Callable[[type], "AttributeType | None"]


class TypeRegistry:
    """Declared attribute type -> :class:`AttributeType` class: what ``Required(py_type)`` maps through.

    One instance, :data:`registry`, serves the whole process (declarations are global, like the entity
    classes that use them); the Pony converters made from it are installed per Database by ``attach()``.
    :meth:`register` refuses to replace a type's registration unless given ``replace=True``, so two
    libraries registering the same type fail loudly instead of one silently winning.

    ``codec_factories`` are tried in order by :meth:`json_codec` for types not registered one by one;
    ``ponykit.types`` sets them once, when the package is complete (Enum first, then encrypted types).
    """

    def __init__(self) -> None:
        self._types: dict[type, type[AttributeType]] = {}
        self._json_codecs: dict[type, AttributeType] = {}
        self.codec_factories: tuple[CodecFactory, ...] = ()
        self._lock = threading.Lock()

    def register(self, py_type: type, type_class: type[AttributeType], *, replace: bool = False) -> None:
        """Map ``py_type`` to ``type_class``; replacing another class registered for it needs replace=True."""
        with self._lock:
            current = self._types.get(py_type)
            if current is not None and current is not type_class and not replace:
                raise ConfigurationError(
                    f"type {py_type.__module__}.{py_type.__qualname__} is already registered with "
                    f"{current.__name__}; registering {type_class.__name__} for it would silently replace "
                    "that mapping: pass replace=True to register_type(...) to replace it on purpose"
                )
            self._types[py_type] = type_class
            self._json_codecs.pop(py_type, None)

    def get(self, py_type: type) -> type[AttributeType] | None:
        """The AttributeType class registered for ``py_type``, or None."""
        return self._types.get(py_type)

    def snapshot(self) -> dict[type, type[AttributeType]]:
        """A copy of the registrations, in registration order."""
        return dict(self._types)

    def json_codec(self, py_type: type) -> AttributeType | None:
        """The AttributeType that handles values of attributes declared as ``py_type``, or None."""
        codec = self._json_codecs.get(py_type)
        if codec is not None:
            return codec
        type_class = self._types.get(py_type)
        if type_class is None:
            for factory in self.codec_factories:
                codec = factory(py_type)
                if codec is not None:
                    break
            else:
                return None
        else:
            codec = type_class()
        self._json_codecs[py_type] = codec
        return codec


#: The process-wide registry ``register_type`` writes to and ``attach()`` installs from.
registry = TypeRegistry()


def registered_types() -> dict[type, type[AttributeType]]:
    """A snapshot of the registry: declared type -> AttributeType class."""
    return registry.snapshot()


def register_type(
    py_type: type,
    type_class: type[AttributeType] | None = None,
    *,
    storage: type | None = None,
    to_db: Callable[[Any], Any] | None = None,
    from_db: Callable[[Any], Any] | None = None,
    validate: Callable[[Any], Any] | None = None,
    queryable: bool = True,
    replace: bool = False,
) -> type[AttributeType]:
    """Make ``Required(py_type)`` / ``Optional(py_type)`` work on every attached Database.

    Either give an :class:`AttributeType` subclass, or the function-style pieces: ``storage`` (the stored
    primitive), ``to_db``, ``from_db`` and optionally ``validate`` (returns the value to keep; raise
    TypeError/ValueError to reject). Register before ``db.generate_mapping()``. Returns the type class.

    The registry is process-wide: registering a type that already has another type class raises
    :class:`~ponykit.errors.ConfigurationError` unless ``replace=True`` (registering the same class again
    changes nothing).
    """
    if not isinstance(py_type, type):
        raise ConfigurationError(f"register_type() needs a class, got {type(py_type).__name__}")
    if type_class is None:
        if storage is None or to_db is None or from_db is None:
            raise ConfigurationError(
                f"register_type({py_type.__name__}, ...) needs either an AttributeType subclass or "
                "storage=, to_db= and from_db="
            )
        attrs: dict[str, Any] = {
            "python_type": py_type,
            "storage": storage,
            "queryable": queryable,
            "to_db": lambda self, v: to_db(v),
            "from_db": lambda self, v: from_db(v),
            "__doc__": f"Attribute type for {py_type.__name__} (registered with register_type).",
        }
        if validate is not None:
            attrs["validate"] = lambda self, v: validate(v)
        type_class = type(f"{py_type.__name__}Type", (AttributeType,), attrs)
    elif not (isinstance(type_class, type) and issubclass(type_class, AttributeType)):
        raise ConfigurationError("register_type(py_type, type_class): type_class must subclass AttributeType")
    if type_class.storage not in _STORAGE_TYPES:
        raise ConfigurationError(
            f"{type_class.__name__}.storage is {type_class.storage!r}; "
            "storage must be one of str, int, float, Decimal, bytes, date, datetime, Json"
        )
    registry.register(py_type, type_class, replace=replace)
    # Databases attached before this call and not mapped yet get the new converter now.
    for db in attached_databases():
        kit = find_kit(db)
        if kit is not None and kit.refresh_types is not None and not _pony.is_mapped(db):
            kit.refresh_types()
    return type_class


def json_codec(py_type: type) -> AttributeType | None:
    """The AttributeType that handles values of attributes declared as ``py_type``, or None.

    Covers registered types, ponykit's own types and every ``enum.Enum`` subclass.
    """
    return registry.json_codec(py_type)
