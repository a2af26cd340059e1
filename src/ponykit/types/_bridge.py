"""The bridge from registered types to Pony: per-Database converter classes and query-parameter encoders.

``types.install(kit)`` (one of ``attach()``'s installers) runs :func:`install` first, then the Enum and
encrypted installers, which use :func:`make_converter`'s helpers here. Everything this module installs is
on one Database's provider instance or in its Kit (``kit.converters``, ``kit.param_encoders``), except
Pony's ``type_normalization_dict``, which is process-wide (see ``_pony.register_type_normalization``).
"""

from __future__ import annotations

import functools
from typing import Any

from pony.orm import Database, Json

from .. import _pony
from .._kit import Kit
from ..errors import ConfigurationError, DataError, ValidationError, ValueTypeError
from ..security.sensitive import is_sensitive
from .base import QUERYABLE_STORAGE, AttributeType, registry

__all__ = ["enable_query_params", "install", "make_converter", "param_encoders_of", "reorder_converters"]


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
    by_column = type_class.queryable and storage in QUERYABLE_STORAGE and _holds_storage_values(type_class)

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
                kind = ValueTypeError if isinstance(exc, TypeError) else ValidationError
                raise kind(f"attribute {_describe(self.attr)}: {exc}") from None
            return value

        def val2dbval(self, val: Any, obj: Any = None) -> Any:
            if val is None:  # an Optional attribute set back to None: NULL, not to_db(None)
                return None
            return base.val2dbval(self, self.ponykit_type.to_db(val), None)

        def dbval2val(self, dbval: Any, obj: Any = None) -> Any:
            if dbval is None:
                return None
            stored = base.dbval2val(self, dbval, None)
            try:
                return self.ponykit_type.from_db(stored)
            except (TypeError, ValueError) as exc:
                pk = _pony.object_primary_key(obj)
                why = "details hidden: the attribute is sensitive" if is_sensitive(self.attr) else exc
                raise DataError(
                    f"attribute {_describe(self.attr)} (primary key {pk!r}): the database holds a value "
                    f"(a {type(stored).__name__}) that is not a valid {type_class.type_name()}: {why}; fix "
                    "the row or the attribute's type"
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
    if type_class.queryable and storage in QUERYABLE_STORAGE:
        enable_query_params(db, storage, param_encoders)
    return TypeConverter


def _holds_storage_values(type_class: type[AttributeType]) -> bool:
    """True if the type's Python values are instances of a primitive storage type (see make_converter)."""
    value_types = type_class.python_type
    return any(
        issubclass(value_type, QUERYABLE_STORAGE)
        for value_type in (value_types if isinstance(value_types, tuple) else (value_types,))
        if isinstance(value_type, type) and value_type is not object
    )


def param_encoders_of(kit: Kit) -> dict[type, Any]:
    """The per-Database map ``value type -> AttributeType`` used to encode query parameters."""
    return kit.param_encoders


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


def install(kit: Kit) -> None:
    """Install a converter for every registered type on ``kit.db`` (idempotent: run again, same result).

    Also leaves ``kit.refresh_types`` set, so a ``register_type()`` made after ``attach()`` and before
    ``generate_mapping()`` reaches this Database too.
    """
    encoders = kit.param_encoders
    pairs: list[tuple[type, type]] = []
    for py_type, type_class in registry.snapshot().items():
        pairs.append((py_type, make_converter(kit.db, type_class, encoders)))
        if type_class.queryable and type_class.storage in QUERYABLE_STORAGE:
            _pony.register_type_normalization(py_type, type_class.storage)
            instance = type_class()
            value_types = type_class.python_type
            for value_type in value_types if isinstance(value_types, tuple) else (value_types,):
                # A primitive value type (AwareDatetime's datetime) is never encoded by type: a plain
                # attribute compared with such a value must bind it as Pony does (issue #12 item 6).
                if value_type is not object and not issubclass(value_type, QUERYABLE_STORAGE):
                    encoders.setdefault(value_type, instance)
    for py_type, converter in pairs:
        kit.register_converter(py_type, converter)
    reorder_converters(kit)
    kit.refresh_types = functools.partial(install, kit)


def reorder_converters(kit: Kit) -> None:
    """Put the Kit's converters in subclass-first order (Pony takes the first ``issubclass`` match)."""
    ordered = sorted(kit.converters.items(), key=lambda p: -len(p[0].__mro__))
    kit.converters.clear()
    kit.converters.update(ordered)
    _pony.install_converters(kit.db, ordered)
