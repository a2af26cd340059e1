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
    "default_column_index",
    "dialect_converter_class",
    "index_create_command",
    "install_index_renderer",
    "install_sql_operation",
    "lookup_condition_parts",
    "make_pattern_lookup_operation",
    "max_length",
    "object_primary_key",
    "pattern_bounds",
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
    shape: str = "like",
    prefix_chars: int = 0,
) -> Callable[..., Any]:
    """An SQL-builder operation ``col OP param`` for columns whose equality needs ``LIKE`` patterns.

    Optimistic checks (the stored value itself) render plain ``col = ?``. Lookups ask the converter for
    ``ponykit_lookup_functions()``: one ``plaintext -> pattern`` function per pattern (each pattern a
    literal prefix followed by ``%``), rendered as an ``OR`` of one condition per pattern, shaped so an
    index can serve it (see :func:`lookup_condition_parts`). A converter that cannot be looked up raises
    from that method; ``forbidden(converter)`` builds the error for a non-parameter operand.
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

        def bind(index: int, part: str, function: Callable[[Any], str]) -> Any:
            inner = Param(builder.paramstyle, paramkey, None)
            return builder.make_composite_param(
                ("ponykit-lookup", index, part, paramkey), [inner], lambda args: function(args[0])
            )

        parts: list[Any] = []
        for index, function in enumerate(functions):
            if parts:
                parts.append(" OR ")
            parts.extend(lookup_condition_parts(shape, prefix_chars, column, index, function, bind))
        return ["(", *parts, ")"]

    return operation


def pattern_bounds(pattern: str) -> tuple[str, str]:
    """``[low, high)`` such that ``low <= s < high`` (binary order) iff ``s LIKE pattern``.

    ``pattern`` is a literal prefix then ``%`` (no other wildcard); any other pattern gives an empty
    range, matching nothing, like the never-matching patterns lookups use for unused key slots.
    """
    if not pattern.endswith("%") or len(pattern) < 2:
        return pattern, pattern
    low = pattern[:-1]
    return low, low[:-1] + chr(ord(low[-1]) + 1)


def lookup_condition_parts(
    shape: str,
    prefix_chars: int,
    column: Any,
    index: int,
    function: Callable[[Any], str],
    bind: Callable[[int, str, Callable[[Any], str]], Any],
) -> list[Any]:
    """The SQL parts of one ``column matches function(value)`` condition, in an index-friendly shape.

    ``like``: ``col LIKE ?``. ``prefix-like``: ``substr(col, 1, N) LIKE ?`` (an expression index on
    ``substr(col, 1, N)`` with pattern ops serves it). ``prefix-range``: ``(substr(col, 1, N) >= ? AND
    substr(col, 1, N) < ?)`` (a plain expression index serves it; SQLite's LIKE is case-insensitive, so its
    LIKE optimization does not apply). ``prefix-range-c``: the same range on ``(substr(col, 1, N) COLLATE
    "C")``, PostgreSQL's binary order whatever the database's collation (planned and run faster than LIKE).
    ``bind(index, part, f)`` returns the parameter of ``f(value)``.
    """
    if shape == "like":
        return [column, " LIKE ", bind(index, "like", function)]
    prefix = ["substr(", column, f", 1, {int(prefix_chars)})"]
    if shape == "prefix-like":
        return [*prefix, " LIKE ", bind(index, "like", function)]
    if shape == "prefix-range-c":
        # PostgreSQL: the range in binary order, served by an index on the same COLLATE "C" expression.
        prefix = ["(", *prefix, ' COLLATE "C")']
        shape = "prefix-range"
    if shape == "prefix-range":
        # Both bounds come from one pattern (a keyed hash): compute it once per value bound. The cache is
        # one (value, low, high) tuple replaced whole, so a thread never pairs a value with another's
        # bounds. Each bound function reads it itself (one frame per bound: these run on every lookup).
        last: list[tuple[Any, str, str] | None] = [None]

        def bound(part: int) -> Callable[[Any], str]:
            def compute(value: Any) -> str:
                cached = last[0]
                if cached is None or cached[0] is not value:
                    cached = (value, *pattern_bounds(function(value)))
                    last[0] = cached
                return cached[part]

            return compute

        low = bind(index, "low", bound(1))
        high = bind(index, "high", bound(2))
        return ["(", *prefix, " >= ", low, " AND ", *prefix, " < ", high, ")"]
    raise ValueError(f"unknown lookup shape {shape!r}")


def default_column_index(attr: Attribute) -> None:
    """Give ``attr`` Pony's default index (``index=True``) unless its declaration chose ``index=`` itself.

    Called from a converter's ``init`` during ``generate_mapping``, before Pony adds the table's indexes.
    """
    if attr.index is None:
        attr.index = True


def index_create_command(attr: Attribute) -> str | None:
    """The ``CREATE INDEX`` statement of ``attr``'s one-column, non-unique index (mapped), or None."""
    entity = attr.entity
    table = entity._database_.schema.tables[entity._table_]
    for columns, index in table.indexes.items():
        if [c.name for c in columns] == list(attr.columns) and not index.is_pk and not index.is_unique:
            return index.get_create_command()  # type: ignore[no-any-return]
    return None


def install_index_renderer(db: Database, render: Callable[[Any, str, Any, str], str | None]) -> None:
    """Let ``render(converter, index_name, table_name, column_name)`` write ``CREATE INDEX`` statements.

    For a non-unique one-column index, the first installed function that returns a statement (a string)
    replaces Pony's; when all return None, Pony's own is used. Names are passed unquoted. The schema
    class is shadowed on this provider instance only, once; ``generate_mapping(create_tables=True)`` then
    creates such indexes with the table, and also adds a missing one to a table that already exists.
    """
    provider = db.provider
    schema_cls = provider.dbschema_cls
    if not getattr(schema_cls, "_ponykit_schema_", False):
        index_base = schema_cls.index_class

        class PonykitIndex(index_base):  # type: ignore[misc, valid-type]
            def get_create_command(self) -> str:
                columns = self.columns
                if len(columns) == 1 and not self.is_pk and not self.is_unique:
                    for renderer in self.schema._ponykit_index_renderers_:
                        sql = renderer(columns[0].converter, self.name, self.table.name, columns[0].name)
                        if sql is not None:
                            return sql  # type: ignore[no-any-return]
                return super().get_create_command()  # type: ignore[no-any-return]

        schema_cls = type(
            "Ponykit" + schema_cls.__name__,
            (schema_cls,),
            {"_ponykit_schema_": True, "index_class": PonykitIndex, "_ponykit_index_renderers_": []},
        )
        provider.dbschema_cls = schema_cls
    renderers: list[Any] = schema_cls._ponykit_index_renderers_
    if render not in renderers:
        renderers.append(render)


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
