"""Pony's SQL builder, on one provider instance: extra operations, pattern lookups, index DDL, and the
converters of query parameters (by the parameter's type, and by the column a parameter is compared with).

A parameter compared with a column of a custom type must be encoded by *that attribute's* converter; Pony
picks a parameter's converter by its Python type only, so the provider instance's SQL builder class is
subclassed to look at the column on the other side of ``=``, ``<>``, ``<``, ``IN``, ``BETWEEN`` ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pony.orm import Database

from ._typing import Attribute
from .database import wrap_provider_method

__all__ = [
    "column_param_converters",
    "default_column_index",
    "index_create_command",
    "install_index_renderer",
    "install_sql_operation",
    "lookup_condition_parts",
    "make_pattern_lookup_operation",
    "pattern_bounds",
    "register_column_converter",
    "wrap_param_converters",
]


_PARAM_CLASSES = "_ponykit_param_classes_"


_COLUMN_CONVERTERS = "_ponykit_column_converters_"


_COLUMN_PARAM = "PONYKIT_COLUMN_PARAM"


_BINARY_OPS = ("EQ", "NE", "LT", "LE", "GT", "GE")


_LIST_OPS = ("IN", "NOT_IN")


_RANGE_OPS = ("BETWEEN", "NOT_BETWEEN")


_SOURCE_SECTIONS = ("FROM", "INNER_JOIN", "LEFT_JOIN")


def wrap_param_converters(db: Database, storage: type, make: Callable[[type], type]) -> type:
    """Make query-parameter converters of ``storage`` values on ``db`` instances of ``make(cls)``.

    ``cls`` is the dialect's converter class for ``storage``. Only ``get_converter_by_py_type`` (query
    parameters) is wrapped, on this provider instance; attribute converters and other Databases keep
    Pony's classes. Idempotent per storage class: the class made first is returned again.
    """
    provider = db.provider
    classes: dict[type, type] | None = vars(provider).get(_PARAM_CLASSES)
    if classes is None:
        classes = {}
        setattr(provider, _PARAM_CLASSES, classes)
        table = classes

        def make_wrapper(original: Callable[..., Any]) -> Callable[..., Any]:
            def get_converter_by_py_type(py_type: Any) -> Any:
                cls = provider._get_converter_type_by_py_type(py_type)
                wrapped = table.get(cls)
                return original(py_type) if wrapped is None else wrapped(provider, py_type)

            return get_converter_by_py_type

        wrap_provider_method(db, "get_converter_by_py_type", make_wrapper)
    cls = provider._get_converter_type_by_py_type(storage)
    made = classes.get(cls)
    if made is None:
        made = make(cls)
        made._ponykit_param_converter_ = True  # type: ignore[attr-defined]
        classes[cls] = made
    return made


def register_column_converter(converter: Any) -> None:
    """Encode parameters compared with ``converter``'s column (in generator queries) by ``converter``.

    Called by a ponykit attribute converter once it knows its attribute. Installs, once per provider
    instance, the SQL-builder subclass that does the swapping (see the module docstring).
    """
    provider = converter.provider
    converters: list[Any] | None = vars(provider).get(_COLUMN_CONVERTERS)
    if converters is None:
        converters = []
        setattr(provider, _COLUMN_CONVERTERS, converters)
        provider.sqlbuilder_cls = _column_builder(provider.sqlbuilder_cls)
    converters.append(converter)


def column_param_converters(db: Database) -> dict[tuple[Any, str], Any]:
    """``(table, column) -> converter`` for the registered column converters of ``db`` (mapped ones)."""
    return _column_map(db.provider)


def _column_map(provider: Any) -> dict[tuple[Any, str], Any]:
    converters = vars(provider).get(_COLUMN_CONVERTERS) or []
    cached = vars(provider).get("_ponykit_column_map_")
    if cached is not None and cached[0] == len(converters):
        return cached[1]  # type: ignore[no-any-return]
    found: dict[tuple[Any, str], Any] = {}
    complete = True
    for converter in converters:
        attr = converter.attr
        table = getattr(attr.entity._root_, "_table_", None)
        columns = attr.columns
        if table is None or not columns:
            complete = False  # not mapped yet: look again next time
            continue
        key = tuple(table) if isinstance(table, list) else table
        found[(key, columns[0])] = converter
    if complete:
        provider._ponykit_column_map_ = (len(converters), found)
    return found


def _column_builder(base: type) -> type:
    """A subclass of the provider's SQL builder class that encodes parameters by the compared column.

    The class is assembled here from two parts made by the helpers below: the source-tracking methods
    (which alias names which table, and how a column parameter is emitted) and the comparison operators
    (which parameters are re-encoded). The subclass keeps ``base``'s docstring.
    """
    namespace: dict[str, Any] = {"__doc__": base.__doc__, "_ponykit_column_builder_": True}
    namespace.update(_source_methods(base))
    namespace.update(_comparison_methods(base))
    return type("PonykitColumn" + base.__name__, (base,), namespace)


def _aliases_of(builder: Any) -> dict[Any, Any]:
    """The builder's ``alias -> table`` map of the sources in scope, made on first use.

    Kept on the builder instance (one per SQL statement), so aliases never leak between statements.
    """
    aliases: dict[Any, Any] | None = getattr(builder, "_ponykit_aliases", None)
    if aliases is None:
        aliases = {}
        builder._ponykit_aliases = aliases
    return aliases


def _record_sources(builder: Any, sections: Any) -> None:
    """Record the table of every ``TABLE`` source in the FROM/JOIN ``sections`` under its alias."""
    aliases = _aliases_of(builder)
    for section in sections:
        if isinstance(section, (list, tuple)) and section and section[0] in _SOURCE_SECTIONS:
            for source in section[1:]:
                if len(source) >= 3 and source[1] == "TABLE":
                    table = source[2]
                    # A schema-qualified table is a list in Pony's AST; the column map keys are tuples.
                    aliases[source[0]] = tuple(table) if isinstance(table, list) else table


def _converter_of(builder: Any, expr: Any) -> Any:
    """The registered converter of the column ``expr`` names, or None (not a column, or a plain one)."""
    if not (isinstance(expr, (list, tuple)) and len(expr) == 3 and expr[0] == "COLUMN"):
        return None
    table = _aliases_of(builder).get(expr[1])
    if table is None:
        return None
    return _column_map(builder.provider).get((table, expr[2]))


def _encode(converter: Any, expr: Any) -> Any:
    """``expr`` as a column parameter encoded by ``converter`` if it is a query parameter, else unchanged."""
    # Only parameter converters (no attribute) are replaced; optimistic checks keep theirs.
    is_param = isinstance(expr, (list, tuple)) and len(expr) == 3 and expr[0] == "PARAM"
    if is_param and expr[2] is not None and getattr(expr[2], "attr", None) is None:
        return [_COLUMN_PARAM, expr[1], converter]
    return expr


def _source_methods(base: type) -> dict[str, Callable[..., Any]]:
    """The builder methods that track which alias names which table, and emit a column parameter.

    ``_subquery`` and ``DELETE`` see every FROM/JOIN before the WHERE clause is built, so the comparison
    operators can look the compared column's table up by alias.
    """

    def _subquery(self: Any, *sections: Any) -> Any:
        aliases = _aliases_of(self)
        # A subquery's aliases are in scope for its own clauses only: restore the outer ones after.
        saved = dict(aliases)
        _record_sources(self, sections)
        try:
            return base._subquery(self, *sections)  # type: ignore[attr-defined]
        finally:
            aliases.clear()
            aliases.update(saved)

    def DELETE(self: Any, alias: Any, from_ast: Any, where: Any = None) -> Any:
        _record_sources(self, [from_ast])
        return base.DELETE(self, alias, from_ast, where)  # type: ignore[attr-defined]

    def column_param(self: Any, paramkey: Any, converter: Any) -> Any:
        from pony.orm.sqlbuilding import Param

        # A composite parameter of its own key: the plain parameter may also be used elsewhere in the
        # statement with Pony's converter, and Pony keeps one Param object per key.
        inner = Param(self.paramstyle, paramkey, None)
        return self.make_composite_param(
            (_COLUMN_PARAM, id(converter), paramkey),
            [inner],
            lambda args, c=converter: None if args[0] is None else c.py2sql(args[0]),
        )

    return {"_subquery": _subquery, "DELETE": DELETE, _COLUMN_PARAM: column_param}


def _comparison_methods(base: type) -> dict[str, Callable[..., Any]]:
    """``base``'s comparison operators, each re-encoding the parameters compared with a converter's column."""
    methods: dict[str, Callable[..., Any]] = {}
    for name in _BINARY_OPS:
        methods[name] = _binary_op(getattr(base, name))
    for name in _LIST_OPS:
        methods[name] = _list_op(getattr(base, name))
    for name in _RANGE_OPS:
        methods[name] = _range_op(getattr(base, name))
    return methods


def _binary_op(method: Callable[..., Any]) -> Callable[..., Any]:
    """``a <op> b``: either side may be the column, so each side is encoded by the other's converter."""

    def op(self: Any, expr1: Any, expr2: Any, *rest: Any) -> Any:
        left, right = _converter_of(self, expr1), _converter_of(self, expr2)
        if left is not None:
            expr2 = _encode(left, expr2)
        if right is not None:
            expr1 = _encode(right, expr1)
        return method(self, expr1, expr2, *rest)

    return op


def _list_op(method: Callable[..., Any]) -> Callable[..., Any]:
    """``column IN (...)``: every listed item is encoded; a subquery (``SELECT``) is left to Pony."""

    def op(self: Any, expr1: Any, items: Any) -> Any:
        converter = _converter_of(self, expr1)
        if converter is not None and items and items[0] != "SELECT":
            items = [_encode(converter, item) for item in items]
        return method(self, expr1, items)

    return op


def _range_op(method: Callable[..., Any]) -> Callable[..., Any]:
    """``column BETWEEN a AND b``: both bounds are encoded by the column's converter."""

    def op(self: Any, expr1: Any, expr2: Any, expr3: Any) -> Any:
        converter = _converter_of(self, expr1)
        if converter is not None:
            expr2, expr3 = _encode(converter, expr2), _encode(converter, expr3)
        return method(self, expr1, expr2, expr3)

    return op


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
