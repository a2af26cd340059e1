"""Query parameters of generator queries: encoding by value type, and by the column compared with.

Pony builds one converter per query parameter from the parameter's Python type
(``provider.get_converter_by_py_type``), and attribute converters from the attribute's declared type
(``provider.get_converter_by_attr``); both look in the same ``converter_classes`` list. ponykit must change
only the first: replacing a list entry would also change what plain attributes of that storage type write
(an aware ``datetime`` in a plain ``Required(datetime)`` was bound as naive UTC: issue #12 item 6).

* :func:`wrap_param_converters` wraps ``get_converter_by_py_type`` on one provider instance, so only
  parameter converters are ponykit subclasses; attribute converters stay exactly Pony's.
* :func:`register_column_converter` covers types whose Python values have the storage type itself
  (``AwareDatetime``: an aware ``datetime`` is stored as naive UTC). A parameter's value type cannot tell
  whether it is compared with such a column or with a plain one, so the SQL builder of that provider
  instance looks at the comparison: when one side is a column of such an attribute and the other a
  parameter, the parameter is encoded by that attribute's converter (``==``, ``!=``, ``<``, ``<=``,
  ``>``, ``>=``, ``in`` and ``between``). Every other parameter is bound as Pony binds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pony.orm import Database

from .database import wrap_provider_method

__all__ = ["column_param_converters", "register_column_converter", "wrap_param_converters"]

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
    """A subclass of the provider's SQL builder class that encodes parameters by the compared column."""

    def aliases_of(builder: Any) -> dict[Any, Any]:
        aliases: dict[Any, Any] | None = getattr(builder, "_ponykit_aliases", None)
        if aliases is None:
            aliases = {}
            builder._ponykit_aliases = aliases
        return aliases

    def record_sources(builder: Any, sections: Any) -> None:
        aliases = aliases_of(builder)
        for section in sections:
            if isinstance(section, (list, tuple)) and section and section[0] in _SOURCE_SECTIONS:
                for source in section[1:]:
                    if len(source) >= 3 and source[1] == "TABLE":
                        table = source[2]
                        aliases[source[0]] = tuple(table) if isinstance(table, list) else table

    def converter_of(builder: Any, expr: Any) -> Any:
        if not (isinstance(expr, (list, tuple)) and len(expr) == 3 and expr[0] == "COLUMN"):
            return None
        table = aliases_of(builder).get(expr[1])
        if table is None:
            return None
        return _column_map(builder.provider).get((table, expr[2]))

    def encode(converter: Any, expr: Any) -> Any:
        # Only parameter converters (no attribute) are replaced; optimistic checks keep theirs.
        is_param = isinstance(expr, (list, tuple)) and len(expr) == 3 and expr[0] == "PARAM"
        if is_param and expr[2] is not None and getattr(expr[2], "attr", None) is None:
            return [_COLUMN_PARAM, expr[1], converter]
        return expr

    namespace: dict[str, Any] = {"__doc__": base.__doc__, "_ponykit_column_builder_": True}

    def _subquery(self: Any, *sections: Any) -> Any:
        aliases = aliases_of(self)
        saved = dict(aliases)
        record_sources(self, sections)
        try:
            return base._subquery(self, *sections)  # type: ignore[attr-defined]
        finally:
            aliases.clear()
            aliases.update(saved)

    def DELETE(self: Any, alias: Any, from_ast: Any, where: Any = None) -> Any:
        record_sources(self, [from_ast])
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

    namespace["_subquery"] = _subquery
    namespace["DELETE"] = DELETE
    namespace[_COLUMN_PARAM] = column_param

    def binary(name: str) -> Callable[..., Any]:
        method = getattr(base, name)

        def op(self: Any, expr1: Any, expr2: Any, *rest: Any) -> Any:
            left, right = converter_of(self, expr1), converter_of(self, expr2)
            if left is not None:
                expr2 = encode(left, expr2)
            if right is not None:
                expr1 = encode(right, expr1)
            return method(self, expr1, expr2, *rest)

        return op

    def listed(name: str) -> Callable[..., Any]:
        method = getattr(base, name)

        def op(self: Any, expr1: Any, items: Any) -> Any:
            converter = converter_of(self, expr1)
            if converter is not None and items and items[0] != "SELECT":
                items = [encode(converter, item) for item in items]
            return method(self, expr1, items)

        return op

    def ranged(name: str) -> Callable[..., Any]:
        method = getattr(base, name)

        def op(self: Any, expr1: Any, expr2: Any, expr3: Any) -> Any:
            converter = converter_of(self, expr1)
            if converter is not None:
                expr2, expr3 = encode(converter, expr2), encode(converter, expr3)
            return method(self, expr1, expr2, expr3)

        return op

    for name in _BINARY_OPS:
        namespace[name] = binary(name)
    for name in _LIST_OPS:
        namespace[name] = listed(name)
    for name in _RANGE_OPS:
        namespace[name] = ranged(name)
    return type("PonykitColumn" + base.__name__, (base,), namespace)
