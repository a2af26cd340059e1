"""Prepared entity queries (pagination): Pony's SQL for one query shape, built once and rebound per call.

Pony builds a query's SQL from its key on every call (filter, order_by, key hashing): that costs more
than a small indexed SELECT. A :class:`Prepared` holds the SQL Pony builds for one shape of
``base[.filter(raw_sql)].order_by(...)`` with a fixed LIMIT, and a binder generated for it that
produces, from new values, the arguments Pony's own parameter adapter would produce.

The binder is positional: on PostgreSQL, whose driver takes Pony's ``%(p1)s`` placeholders with a
dict, the SQL is rewritten to ``%s`` placeholders and a tuple (psycopg2 formats a tuple with less
work, and no dict of names is built per call). Values of a raw filter (``$v[i]``) are read from the
caller's list and passed through the parameter's converter only when it changes anything; every
other parameter is evaluated by Pony.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import pony.orm.core as _core
from pony.orm.dbapiprovider import Converter
from pony.orm.ormtypes import parse_raw_sql
from pony.orm.sqlbuilding import Param

from .._codegen import build_function
from .materialize import objects_from_rows
from .values import is_identity

__all__ = [
    "Prepared",
    "join_syntax",
    "preparable",
    "prepare",
    "query_arguments",
    "run_prepared",
]


# bind(query variables, raw filter values, offset) -> the driver's arguments
Binder = Callable[[dict[Any, Any], Sequence[Any], int], Any]


class Prepared:
    """Pony's SQL for one shape of ``base[.filter(raw_sql)].order_by(...)``, limited to a fixed number
    of rows (from an offset bound per call, if prepared so), and the binder of its parameters.

    Holds no values: :func:`run_prepared` binds those of a query with the same key as ``base``.
    """

    __slots__ = ("attr_offsets", "bind", "entity", "sql", "used_attrs")

    def __init__(
        self, query: Any, limit: int, bind_offset: bool, raw_key: Any, raw_order: tuple[int, ...]
    ) -> None:
        translator = query._translator
        self.entity = translator.expr_type
        offset = _OFFSET_MARK if bind_offset else None
        sql_ast, self.attr_offsets = translator.construct_sql_ast(
            limit, offset, query._distinct, None, None, None, False, False, False
        )
        provider = query._database.provider
        builder = provider.sqlbuilder_cls(provider, sql_ast)
        self.sql, self.bind = _binder(
            builder.sql,
            builder.params,
            provider.paramstyle,
            raw_key,
            raw_order,
            bind_offset,
            label=f"pony.prepared {self.entity.__name__}",
        )
        self.used_attrs = translator.get_used_attrs()


# Pony writes OFFSET as a literal, so each page number would be a new SQL text (and a new entry in
# Pony's per-SQL statistics, which are never emptied). A prepared page query binds it instead: Pony
# renders this mark, which is then replaced by a placeholder bound after Pony's own parameters.
_OFFSET_MARK = 987_654_321_987_654_321


_POSITIONAL = {"qmark": "?", "format": "%s"}


# In Pony's pyformat SQL, '%' in literals is doubled; the rest are its placeholders, numbered by first use.
_PYFORMAT = re.compile(r"%%|%\(p(\d+)\)s")


class _CannotPrepare(Exception):
    pass


def _binder(
    sql: str,
    params: tuple[Any, ...],
    paramstyle: str,
    raw_key: Any,
    raw_order: tuple[int, ...],
    bind_offset: bool,
    *,
    label: str,
) -> tuple[str, Binder]:
    """The SQL to run and ``bind(variables, values, offset) -> arguments`` for a statement of Pony's."""
    if paramstyle == "pyformat":
        sql = _positional_pyformat(sql, params)
        paramstyle = "format"
    placeholder = _POSITIONAL.get(paramstyle)
    if placeholder is None:
        raise _CannotPrepare(paramstyle)  # numeric and named styles (Oracle): not supported here
    if bind_offset:
        tail = f" OFFSET {_OFFSET_MARK}"
        if not sql.endswith(tail) or sql.count(str(_OFFSET_MARK)) != 1:
            raise _CannotPrepare(sql)  # a dialect that does not end its SQL with LIMIT ... OFFSET
        sql = sql[: -len(tail)] + " OFFSET " + placeholder
    namespace: dict[str, Any] = {}
    items = [_argument(n, param, raw_key, raw_order, namespace) for n, param in enumerate(params)]
    if bind_offset:
        items.append("offset")  # the OFFSET placeholder is the last one in the text
    source = f"def bind(variables, v, offset):\n    return ({''.join(f'{item}, ' for item in items)})\n"
    # Text built from indexes and fixed names only; values and converters reach it through namespace.
    return sql, build_function("bind", source, namespace, label=label)


def _positional_pyformat(sql: str, params: tuple[Any, ...]) -> str:
    """``sql`` with each ``%(pN)s`` replaced by ``%s``; its placeholders must be ``params`` in order."""
    ids: list[int] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return "%%"
        ids.append(int(match.group(1)))
        return "%s"

    positional = _PYFORMAT.sub(replace, sql)
    if ids != [param.id for param in params]:
        raise _CannotPrepare(sql)
    return positional


def _argument(n: int, param: Any, raw_key: Any, raw_order: tuple[int, ...], namespace: dict[str, Any]) -> str:
    """The binder's expression for the ``n``-th placeholder: what ``param.eval(variables)`` gives."""
    varkey, i, j = param.paramkey
    if type(param) is not Param or varkey != raw_key or i is None or j is not None:
        if raw_key is not None and _reads(param, raw_key):
            raise _CannotPrepare(param)  # reads the raw filter's values in a way not bound here
        namespace[f"p{n}"] = param
        return f"p{n}.eval(variables)"
    value = f"v[{raw_order[i]}]"
    converter = param.converter
    steps = []
    if converter is not None:
        if converter.attr is None and not is_identity(converter.val2dbval, Converter.val2dbval):
            steps.append(converter.val2dbval)
        if not is_identity(converter.py2sql, Converter.py2sql):
            steps.append(converter.py2sql)
    if not steps:
        return value
    namespace[f"c{n}"] = _converted(steps)
    return f"c{n}({value})"


def _reads(param: Any, key: Any) -> bool:
    if isinstance(param, Param) and param.paramkey[0] == key:
        return True
    return any(_reads(item, key) for item in getattr(param, "items", ()) if isinstance(item, Param))


def _converted(steps: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is not None:
            for step in steps:
                value = step(value)
        return value

    return convert


def preparable(query: Any) -> bool:
    """True if the SQL of ``query`` (an entity query) depends on its key alone, not on its values."""
    translator = query._translator
    return not (
        query._prefetch
        or query._for_update
        or translator.fixed_param_values
        or translator.func_extractors_map
        or not translator.can_be_cached
        or _core.options.MAX_FETCH_COUNT is not None
    )


def prepare(
    query: Any, base: Any, limit: int, raw_sql: str | None = None, bind_offset: bool = False
) -> Prepared | None:
    """Prepare the first ``limit`` rows of ``query`` (``base``, optionally ``filter_raw(base,
    raw_sql, ...)``, then ordered); with ``bind_offset``, of the rows from an offset given to
    :func:`run_prepared`.

    The SQL goes into the returned object and not into Pony's per-Database SQL cache, which keeps
    every distinct LIMIT/OFFSET forever; whoever keeps the Prepared objects bounds their number.

    None when the query cannot be rebound safely: its SQL depends on values (see :func:`preparable`),
    its SELECT lists only keys, or its variables are not those of ``base`` plus one raw filter.
    """
    if not (preparable(query) and preparable(base)):
        return None
    extra = [key for key in query._vars if key not in base._vars]
    if len(extra) != (0 if raw_sql is None else 1):
        return None
    if any(query._vars[key] is not value for key, value in base._vars.items()):
        return None
    raw_order: tuple[int, ...] | None = ()
    if raw_sql is not None:
        raw_order = _raw_value_order(raw_sql)
    if raw_order is None:
        return None
    try:
        prepared = Prepared(query, limit, bind_offset, extra[0] if extra else None, raw_order)
    except _CannotPrepare:
        return None
    return None if prepared.attr_offsets is None else prepared


_RAW_VALUE = re.compile(r"v\[(\d+)\]")


def _raw_value_order(raw_sql: str) -> tuple[int, ...] | None:
    """For each ``$`` expression of ``raw_sql`` in text order, the index ``i`` of its ``$v[i]``.

    RawSQL evaluates its expressions in the order they appear and Pony's parameters read them by
    that position. None when an expression is anything but ``v[<int>]``.
    """
    items, _codes = parse_raw_sql(raw_sql)
    order = []
    for item in items:
        if isinstance(item, str):
            continue
        match = _RAW_VALUE.fullmatch(item[0].strip())
        if match is None:
            return None
        order.append(int(match.group(1)))
    return tuple(order)


def join_syntax() -> Any:
    """Pony's global SQL-building option that changes the text of a prepared query."""
    return _core.options.INNER_JOIN_SYNTAX


def run_prepared(
    prepared: Prepared, query: Any, values: list[Any] | None = None, offset: int = 0
) -> list[Any]:
    """Run ``prepared`` with the variables of ``query`` (same key as its base), raw ``$v`` values and
    the offset (when prepared with ``bind_offset``).

    Gives the objects that ``fetch_entities`` of the fully built query would give.
    """
    arguments = prepared.bind(query._vars, values or (), offset)
    rows = query._database._exec_sql(prepared.sql, arguments).fetchall()
    return objects_from_rows(prepared.entity, rows, prepared.attr_offsets, prepared.used_attrs)


def query_arguments(query: Any, prepared: Prepared | None = None) -> tuple[Any, ...]:
    """The values Pony binds to the parameters of ``query``'s SQL, in a stable order.

    With ``prepared`` (from :func:`prepare` of a query with the same key and no raw filter), its
    binder computes them without building the SQL; otherwise Pony builds the query's SQL and
    arguments (a dict for named placeholders, taken in the order of the names).
    """
    if prepared is not None:
        return tuple(prepared.bind(query._vars, (), 0))
    _sql, arguments, _offsets, _key = query._construct_sql_and_arguments()
    if isinstance(arguments, dict):
        return tuple(value for _name, value in sorted(arguments.items()))
    return tuple(arguments or ())
