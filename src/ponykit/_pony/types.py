"""Attribute types (ponykit.types, ponykit.security): converters, query-parameter normalization."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pony.orm import Database

from ._typing import Attribute, Entity

__all__ = [
    "attribute_converter",
    "attribute_entity",
    "attribute_option",
    "converter_without_option",
    "default_alias",
    "dialect_converter_class",
    "install_sql_operation",
    "make_pattern_lookup_operation",
    "max_length",
    "object_primary_key",
    "positional_placeholder",
    "raw_connection",
    "raw_sql_condition",
    "register_type_normalization",
    "root_entity_name",
    "sql_alias",
]


_MISSING = object()


def attribute_option(attr: Attribute, name: str, default: Any = None) -> Any:
    """The value of keyword option ``name`` given on ``Required(...)``/``Optional(...)``, or ``default``."""
    return attr.kwargs.get(name, default)


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


def dialect_converter_class(db: Database, py_type: type) -> type:
    """The converter class plain Pony gives ``py_type`` on this dialect (ponykit's entries ignored)."""
    for key, cls in type(db.provider).converter_classes:
        if issubclass(py_type, key):
            return cls  # type: ignore[no-any-return]
    raise TypeError(f"the {db.provider.dialect} provider has no converter for {py_type.__name__}")


def register_type_normalization(py_type: type, storage: type) -> None:
    """Tell Pony's query translator to treat ``py_type`` like ``storage`` (process-wide, see types docs).

    ``pony.orm.ormtypes.type_normalization_dict`` is global. It only maps a type to the primitive type it
    is stored as; ponykit adds only types that are mapped through ponykit converters (Enum classes used
    as attribute types, ponykit's own value types, registered user types), and the per-Database parameter
    converters turn such values into their storage form before binding.
    """
    from pony.orm import ormtypes

    ormtypes.type_normalization_dict[py_type] = storage


def install_sql_operation(db: Database, name: str, method: Callable[..., Any]) -> None:
    """Give this provider instance's SQL builder a method ``name`` (an AST operation a converter can name).

    The builder class is shadowed on the provider instance by a subclass, once; other Databases keep
    Pony's class. Converters name the operation in their ``EQ`` attribute, which Pony uses for
    ``Entity.get(attr=value)`` lookups and optimistic checks.
    """
    provider = db.provider
    cls = provider.sqlbuilder_cls
    if not getattr(cls, "_ponykit_builder_", False):
        cls = type("Ponykit" + cls.__name__, (cls,), {"_ponykit_builder_": True})
        provider.sqlbuilder_cls = cls
    setattr(cls, name, method)


def make_pattern_lookup_operation(
    forbidden: Callable[[Any], BaseException],
) -> Callable[..., Any]:
    """An SQL-builder operation ``col OP param`` for columns whose equality needs ``LIKE`` patterns.

    Optimistic checks (the stored value itself) render plain ``col = ?``. Lookups ask the converter for
    ``ponykit_lookup_functions()``: one ``plaintext -> pattern`` function per pattern, and render
    ``(col LIKE ? OR col LIKE ? ...)`` with one bound pattern each. A converter that cannot be looked up
    raises from that method; ``forbidden(converter)`` builds the error for a non-parameter operand.
    """
    from pony.orm.sqlbuilding import Param

    def operation(builder: Any, expr: Any, param: Any) -> Any:
        if not isinstance(param, list) or param[0] != "PARAM":
            raise forbidden(None)
        paramkey, converter = param[1], param[2]
        if len(param) > 3 and param[3]:  # optimistic check: compare the stored envelope as is
            return builder(["EQ", expr, param])
        functions = converter.ponykit_lookup_functions()
        column = builder(expr)
        parts: list[Any] = []
        for index, function in enumerate(functions):
            inner = Param(builder.paramstyle, paramkey, None)
            composite = builder.make_composite_param(
                ("ponykit-lookup", index, paramkey), [inner], lambda args, f=function: f(args[0])
            )
            if parts:
                parts.append(" OR ")
            parts.extend([column, " LIKE ", composite])
        return ["(", *parts, ")"]

    return operation


def root_entity_name(entity: Entity) -> str:
    """The name of the root of ``entity``'s inheritance tree (the entity that owns the table)."""
    return str(entity._root_.__name__)


def attribute_entity(attr: Attribute) -> Entity:
    """The entity class that declares ``attr``."""
    return attr.entity


def attribute_converter(attr: Attribute) -> Any:
    """The converter Pony built for a mapped, single-column attribute."""
    return attr.converters[0]


def max_length(attr: Attribute) -> int | None:
    """The maximum string length Pony enforces for ``attr`` (``max_len``), or None."""
    converters = attr.converters
    return getattr(converters[0], "max_len", None) if converters else None


def object_primary_key(obj: Any) -> Any:
    """The primary key of ``obj`` if it has one yet (None for an object not saved, or for no object)."""
    if obj is None:
        return None
    try:
        return obj._pkval_
    except AttributeError:
        return None


def default_alias(entity: Entity) -> str:
    """The SQL alias Pony gives ``entity`` in ``Entity.select()`` (its uppercase letters, lowercased)."""
    return str(entity._default_iter_name_)


def sql_alias(var_name: str) -> str:
    """The SQL alias Pony gives the first table of a generator variable (``t`` is renamed ``t-1``)."""
    return var_name if var_name != "t" else "t-1"


def raw_sql_condition(sql: str, values: dict[str, Any]) -> Any:
    """A ``raw_sql`` object usable as a generator-query condition: ``$name`` refers to ``values[name]``."""
    from pony.orm.ormtypes import RawSQL

    return RawSQL(sql, {}, dict(values), bool)


def positional_placeholder(db: Database) -> str:
    """The positional parameter marker of the driver (``?`` or ``%s``), for ``executemany`` statements."""
    return "?" if db.provider.paramstyle == "qmark" else "%s"


def raw_connection(db: Database) -> Any:
    """The DB-API connection of the current db_session (starting its transaction)."""
    return db.get_connection()
