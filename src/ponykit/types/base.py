"""The public custom-type API: ``AttributeType``, ``register_type`` and the bridge to Pony converters.

A type declares the Python values it holds (``python_type``), the primitive it is stored as
(``storage``: str, int, float, Decimal, bytes, date, datetime or Json) and three conversions
(``validate``, ``to_db``, ``from_db``). ``attach(db)`` turns every registered type into a Pony converter
for that Database only: a subclass of the dialect's own converter for the storage type, so DDL, driver
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

from pony.orm import Database, Json

from .. import _pony
from ..errors import ConfigurationError
from ..kit import Kit, add_attach_hook, attached_databases, find_kit

__all__ = ["AttributeType", "json_codec", "register_type", "registered_types"]

_STORAGE_TYPES: tuple[type, ...] = (str, int, float, Decimal, bytes, _dt.date, _dt.datetime, Json)
# Storage types whose Pony converter binds the stored value unchanged (val2dbval is the identity), so a
# query parameter can be encoded by ``to_db`` alone.
_QUERYABLE_STORAGE: tuple[type, ...] = (str, int, float, Decimal, bytes, _dt.date, _dt.datetime)


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

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - set(self.options)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no option {sorted(unknown)[0]!r}")
        self.config = options

    @classmethod
    def type_name(cls) -> str:
        """A name for messages: the Python type's name, or the class name."""
        pt = cls.python_type
        return pt.__name__ if isinstance(pt, type) and pt is not object else cls.__name__

    def validate(self, value: Any) -> Any:
        """Check (and normalise) a Python value given by the user; return the value to keep."""
        if not isinstance(value, self.python_type):
            raise TypeError(f"expected {self.type_name()}, got {type(value).__name__}")
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
# Registry: declared attribute type -> AttributeType class (declarations are process-wide; converters are
# installed per Database by attach()).

_registry: dict[type, type[AttributeType]] = {}
_lock = threading.Lock()
_json_codecs: dict[type, AttributeType] = {}


def registered_types() -> dict[type, type[AttributeType]]:
    """A snapshot of the registry: declared type -> AttributeType class."""
    return dict(_registry)


def register_type(
    py_type: type,
    type_class: type[AttributeType] | None = None,
    *,
    storage: type | None = None,
    to_db: Callable[[Any], Any] | None = None,
    from_db: Callable[[Any], Any] | None = None,
    validate: Callable[[Any], Any] | None = None,
    queryable: bool = True,
) -> type[AttributeType]:
    """Make ``Required(py_type)`` / ``Optional(py_type)`` work on every attached Database.

    Either give an :class:`AttributeType` subclass, or the function-style pieces: ``storage`` (the stored
    primitive), ``to_db``, ``from_db`` and optionally ``validate`` (returns the value to keep; raise
    TypeError/ValueError to reject). Register before ``db.generate_mapping()``. Returns the type class.
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
    with _lock:
        _registry[py_type] = type_class
        _json_codecs.pop(py_type, None)
    for db in attached_databases():
        if not _pony.is_mapped(db):
            kit = find_kit(db)
            if kit is not None:
                _install_types(kit)
    return type_class


def json_codec(py_type: type) -> AttributeType | None:
    """The AttributeType that handles values of attributes declared as ``py_type``, or None.

    Covers registered types, ponykit's own types and every ``enum.Enum`` subclass.
    """
    codec = _json_codecs.get(py_type)
    if codec is not None:
        return codec
    type_class = _registry.get(py_type)
    if type_class is None:
        for factory in _codec_factories:
            codec = factory(py_type)
            if codec is not None:
                break
        else:
            return None
    else:
        codec = type_class()
    _json_codecs[py_type] = codec
    return codec


# Other modules (builtin Enum support) add factories for types they handle without registration.
_codec_factories: list[Callable[[type], AttributeType | None]] = []


# ---------------------------------------------------------------------------------------------------------
# The converter bridge


def _describe(attr: Any) -> str:
    return _pony.attr_label(attr) if attr is not None else "a value"


def make_converter(db: Database, type_class: type[AttributeType], param_encoders: dict[type, Any]) -> type:
    """A Pony converter class for ``type_class`` on ``db``: a subclass of the dialect's storage converter."""
    storage = type_class.storage
    base: Any = _pony.converter_class_for(db, storage)
    default_type = type_class()
    check_storage = storage is not Json
    json_storage = storage is Json
    # Values of the storage type itself (AwareDatetime: aware datetimes) cannot be recognised by their
    # type in a query parameter, since plain attributes hold them too: such parameters are encoded by the
    # column they are compared with instead.
    by_column = type_class.queryable and storage in _QUERYABLE_STORAGE and _holds_storage_values(type_class)

    class TypeConverter(base):  # type: ignore[misc]
        __doc__ = f"ponykit converter for {type_class.__name__} stored as {storage.__name__}."
        ponykit_type = default_type

        def init(self, kwargs: dict[str, Any]) -> None:
            own = {name: kwargs.pop(name) for name in type_class.options if name in kwargs}
            try:
                self.ponykit_type = type_class(**own)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"attribute {_describe(self.attr)}: {exc}") from None
            super().init(kwargs)
            if by_column and self.attr is not None:
                _pony.register_column_converter(self)

        def validate(self, val: Any, obj: Any = None) -> Any:
            atype = self.ponykit_type
            try:
                value = atype.validate(val)
                if check_storage:
                    base.validate(self, atype.to_db(value), None)
            except (TypeError, ValueError) as exc:
                kind = TypeError if isinstance(exc, TypeError) else ValueError
                raise kind(f"attribute {_describe(self.attr)}: {exc}") from None
            return value

        def val2dbval(self, val: Any, obj: Any = None) -> Any:
            return base.val2dbval(self, self.ponykit_type.to_db(val), None)

        def dbval2val(self, dbval: Any, obj: Any = None) -> Any:
            if dbval is None:
                return None
            stored = base.dbval2val(self, dbval, None)
            try:
                return self.ponykit_type.from_db(stored)
            except (TypeError, ValueError) as exc:
                pk = _pony.object_primary_key(obj)
                raise ValueError(
                    f"attribute {_describe(self.attr)} (primary key {pk!r}): the database holds a value "
                    f"that is not a valid {type_class.type_name()}: {exc}"
                ) from None

        def py2sql(self, val: Any) -> Any:
            # Entity.get(attr=value) passes the validated Python value; INSERT/UPDATE pass the dbval.
            atype = self.ponykit_type
            if atype.is_python_value(val):
                val = base.val2dbval(self, atype.to_db(val), None)
            return base.py2sql(self, val)

        if json_storage:

            def dbvals_equal(self, x: Any, y: Any) -> bool:
                return bool(base.dbvals_equal(self, x, y))

    TypeConverter.__name__ = TypeConverter.__qualname__ = f"{type_class.__name__}Converter"
    if type_class.queryable and storage in _QUERYABLE_STORAGE:
        enable_query_params(db, storage, param_encoders)
    return TypeConverter


def _holds_storage_values(type_class: type[AttributeType]) -> bool:
    """True if the type's Python values are instances of a primitive storage type (see make_converter)."""
    value_types = type_class.python_type
    return any(
        issubclass(value_type, _QUERYABLE_STORAGE)
        for value_type in (value_types if isinstance(value_types, tuple) else (value_types,))
        if isinstance(value_type, type) and value_type is not object
    )


def param_encoders_of(kit: Kit) -> dict[type, Any]:
    """The per-Database map ``value type -> AttributeType`` used to encode query parameters."""
    encoders: dict[type, Any] | None = getattr(kit, "_ponykit_param_encoders", None)
    if encoders is None:
        encoders = {}
        kit._ponykit_param_encoders = encoders  # type: ignore[attr-defined]
    return encoders


def enable_query_params(db: Database, storage: type, encoders: dict[type, Any]) -> None:
    """Make this Database's query parameters of ``storage`` type encode registered values before binding.

    Only query-parameter converters change (``_pony.wrap_param_converters``): attribute converters of
    plain attributes stay Pony's, so plain attributes write exactly what Pony writes.
    """

    def make(cls: Any) -> type:
        def py2sql(self: Any, val: Any) -> Any:
            atype = encoders.get(type(val))
            if atype is not None and atype.is_python_value(val):
                val = atype.to_db(val)
            return cls.py2sql(self, val)

        return type("Ponykit" + cls.__name__, (cls,), {"py2sql": py2sql, "__doc__": cls.__doc__})

    _pony.wrap_param_converters(db, storage, make)


def _install_types(kit: Kit) -> None:
    encoders = param_encoders_of(kit)
    pairs: list[tuple[type, type]] = []
    for py_type, type_class in list(_registry.items()):
        pairs.append((py_type, make_converter(kit.db, type_class, encoders)))
        if type_class.queryable and type_class.storage in _QUERYABLE_STORAGE:
            _pony.register_type_normalization(py_type, type_class.storage)
            instance = type_class()
            value_types = type_class.python_type
            for value_type in value_types if isinstance(value_types, tuple) else (value_types,):
                # A primitive value type (AwareDatetime's datetime) is never encoded by type: a plain
                # attribute compared with such a value must bind it as Pony does (issue #12 item 6).
                if value_type is not object and not issubclass(value_type, _QUERYABLE_STORAGE):
                    encoders.setdefault(value_type, instance)
    for py_type, converter in pairs:
        kit.register_converter(py_type, converter)
    reorder_converters(kit)


def reorder_converters(kit: Kit) -> None:
    """Put the Kit's converters in subclass-first order (Pony takes the first ``issubclass`` match)."""
    ordered = sorted(kit.converters.items(), key=lambda p: -len(p[0].__mro__))
    kit.converters.clear()
    kit.converters.update(ordered)
    _pony.install_converters(kit.db, ordered)


add_attach_hook(_install_types)
