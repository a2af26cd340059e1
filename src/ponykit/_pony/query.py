"""Queries (ponykit.query, ponykit.diagnostics): query shape, order, raw filters, N+1 diagnosis."""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pony.orm.core as _core
from pony.orm import Database
from pony.orm.dbapiprovider import BoolConverter, Converter, IntConverter, RealConverter
from pony.orm.ormtypes import LongStr, RawSQL

from ._typing import Attribute, Entity
from .prefetch import is_identity
from .prepared import objects_from_rows

__all__ = [
    "attr_column",
    "attr_expectation",
    "attr_is_lazy",
    "attr_is_sensitive",
    "column_value_check",
    "count_capped",
    "desc_of",
    "exec_sql",
    "fetch_entities",
    "filter_raw",
    "implicit_distinct",
    "lost_distinct",
    "n_plus_one_culprit",
    "order_in_select",
    "order_item",
    "per_database_cache",
    "query_alias",
    "query_cache_sizes",
    "query_entity",
    "query_key",
    "query_order",
    "query_shape",
]


# Query shape: the entity a query returns, its alias and its ORDER BY, as attributes.


def query_entity(query: Any) -> Entity | None:
    """The entity class a query returns, or None when it returns tuples or scalars."""
    expr_type = query._translator.expr_type
    return expr_type if isinstance(expr_type, _core.EntityMeta) else None


def query_alias(query: Any) -> str:
    """The SQL table alias Pony uses for the query's entity (``b`` in ``select(b for b in Book)``)."""
    return str(query._translator.alias)


def query_order(query: Any) -> list[tuple[Attribute, bool]] | None:
    """The query's ORDER BY as ``[(attribute, descending), ...]``; None if it orders by anything else.

    Only plain column attributes of the query's own entity are understood; an expression, a raw SQL
    fragment or a column of another table gives None.
    """
    entity = query_entity(query)
    if entity is None:
        return None
    alias = query_alias(query)
    by_column: dict[str, Attribute] = {}
    for attr in (*entity._root_._attrs_, *entity._root_._subclass_attrs_):
        if not attr.is_collection and len(attr.columns) == 1:
            by_column.setdefault(attr.columns[0], attr)
    result: list[tuple[Attribute, bool]] = []
    for item in query._translator.order:
        descending = False
        if item and item[0] == "DESC":
            descending, item = True, item[1]
        if not (item and item[0] == "COLUMN" and item[1] == alias and item[2] in by_column):
            return None
        result.append((by_column[item[2]], descending))
    return result


def order_item(item: Any) -> tuple[Attribute, bool] | None:
    """``(attribute, descending)`` for an ``Attribute`` or ``desc(attribute)``; None for anything else."""
    if isinstance(item, _core.DescWrapper):
        return item.attr, True
    if isinstance(item, _core.Attribute):
        return item, False
    return None


# Pony's desc(attr) makes a new DescWrapper per call and DescWrapper hashes by identity, so each
# order_by(desc(attr)) call adds an entry to db._translator_cache. One wrapper per attribute keeps
# ponykit's repeated calls on one cache entry. The wrappers live on the entity class (attributes
# cannot be weakly referenced), so they go away with it.


def desc_of(attr: Attribute) -> Any:
    """``desc(attr)``, the same wrapper object on every call (so Pony's translator cache is reused)."""
    entity = attr.entity
    wrappers: dict[str, Any] | None = entity.__dict__.get("_ponykit_desc_wrappers_")
    if wrappers is None:
        wrappers = {}
        entity._ponykit_desc_wrappers_ = wrappers
    wrapper = wrappers.get(attr.name)
    if wrapper is None or wrapper.attr is not attr:
        wrapper = wrappers[attr.name] = _core.DescWrapper(attr)
    return wrapper


def per_database_cache(db: Database, name: str, factory: Callable[[], Any]) -> Any:
    """A cache object stored on ``db`` itself, so it never keeps a Database (or its entities) alive."""
    key = f"_ponykit_cache_{name}_"
    cache = db.__dict__.get(key)
    if cache is None:
        cache = factory()
        setattr(db, key, cache)
    return cache


def query_cache_sizes(db: Database) -> tuple[int, int]:
    """``(translators, SQL texts)`` held in Pony's per-Database query caches, which are never emptied.

    For tests that guard against a helper making Pony cache one entry per call.
    """
    return len(db._translator_cache), len(db._constructed_sql_cache)


def filter_raw(query: Any, sql: str, values: list[Any]) -> Any:
    """``query.filter(raw_sql(sql))`` where ``$v[0]``, ``$v[1]``... in ``sql`` are bound from ``values``.

    The values are parameters (never inlined), and the SQL text alone keys Pony's translator cache, so
    one shape of filter costs one translation however many different values it is used with.
    """
    return query.filter(RawSQL(sql, {}, {"v": values}))


def implicit_distinct(query: Any) -> bool:
    """True if Pony adds DISTINCT to ``query``'s SQL only as long as the query is unordered.

    Pony's translator sets ``distinct`` when the query can repeat a row (it iterates a collection),
    and its SQL builder leaves DISTINCT out whenever the query has an ORDER BY (``construct_sql_ast``)
    unless ``distinct()`` was asked for explicitly, so an ordered copy of such a query can return rows
    the unordered one returns once several times.
    """
    return bool(query._distinct is None and query._translator.distinct)


def lost_distinct(query: Any) -> bool:
    """True if ``query`` is ordered and, for that reason only, runs without the DISTINCT Pony would add."""
    return implicit_distinct(query) and bool(query._translator.order)


def order_in_select(query: Any) -> bool:
    """True if every ORDER BY item of ``query`` is one of the columns its SELECT lists.

    PostgreSQL accepts SELECT DISTINCT only with such an order. For an entity query: its order is a
    list of the entity's own non-lazy attributes; for other queries: each item is a result column
    number (``order_by(1)``) or one of the selected expressions.
    """
    if query_entity(query) is not None:
        order = query_order(query)
        return order is not None and not any(attr_is_lazy(attr) for attr, _descending in order)
    translator = query._translator
    for item in translator.order:
        if item and item[0] == "DESC":
            item = item[1]
        if not (item and item[0] == "VALUE" and type(item[1]) is int) and item not in translator.expr_columns:
            return False
    return True


def attr_column(attr: Attribute) -> str:
    """The column of a one-column attribute (a sort column of a keyset page)."""
    return str(attr.columns[0])


def attr_expectation(attr: Attribute) -> tuple[str, str]:
    """``("Book.title", "str")``: the attribute and its Python type's name, for error messages."""
    return f"{attr.entity.__name__}.{attr.name}", attr.py_type.__name__


def attr_is_lazy(attr: Attribute) -> bool:
    """True if the attribute is lazy (not in the SELECT list of a query over its entity)."""
    return bool(attr.lazy)


def query_key(query: Any) -> Any:
    """A hashable, process-local key of a query's shape (code, variable types, filters, order)."""
    return query._key


def query_shape(query: Any) -> Any:
    """:func:`query_key` plus what changes a query's SQL without changing that key (``distinct()``)."""
    return (query._key, query._distinct)


def _pony_fetch(query: Any, limit: int | None) -> list[Any]:
    return list(query if limit is None else query[:limit])


def fetch_entities(query: Any, limit: int | None = None) -> list[Any]:
    """The first ``limit`` objects (all when None) of an entity query, built by :func:`materialize`.

    Same SQL and the same session state as ``query[:limit]`` (read bits of the attributes the query
    used included), without Pony's generic row parser and without Pony's per-session result cache,
    so the rows are always read again. A query with ``prefetch()`` or ``for_update()``, one whose
    SELECT lists only keys (aggregated or optimized queries) and ``MAX_FETCH_COUNT`` go through
    Pony's own fetch.
    """
    if query._prefetch or query._for_update or _core.options.MAX_FETCH_COUNT is not None:
        return _pony_fetch(query, limit)
    sql, arguments, attr_offsets, _key = query._construct_sql_and_arguments(limit=limit)
    if attr_offsets is None:
        return _pony_fetch(query, limit)
    translator = query._translator
    rows = query._database._exec_sql(sql, arguments).fetchall()
    return objects_from_rows(translator.expr_type, rows, attr_offsets, translator.get_used_attrs())


def count_capped(query: Any, cap: int) -> int:
    """``min(cap, number of rows of query)``, counting at most ``cap`` rows in the database."""
    sql, arguments, _offsets, _key = query._construct_sql_and_arguments(limit=cap)
    db = query._database
    cursor = db._exec_sql(f"SELECT COUNT(*) FROM ({sql}) ponykit_capped", arguments)
    return int(cursor.fetchone()[0])


def exec_sql(db: Database, sql: str, arguments: Any = None) -> Any:
    """Run one statement in the session's connection, through Pony (logged, counted, reconnecting)."""
    return db._exec_sql(sql, arguments)


def attr_is_sensitive(attr: Attribute) -> bool:
    """True if the attribute's type is marked sensitive or encrypted (its values must not leak)."""
    py_type = attr.py_type
    return bool(
        getattr(py_type, "__ponykit_sensitive__", False) or getattr(py_type, "__ponykit_encrypted__", False)
    )


# Checking a column value that comes from outside (a keyset cursor).

# Python types whose values Pony hands over as they are: a value must have exactly that type (an int
# is not a float, True is not an int, a datetime is not a date).
_EXACT_TYPES = {
    bool: bool,
    int: int,
    float: float,
    str: str,
    LongStr: str,
    bytes: bytes,
    Decimal: Decimal,
    dt.date: dt.date,
    dt.datetime: dt.datetime,
    dt.time: dt.time,
    dt.timedelta: dt.timedelta,
    uuid.UUID: uuid.UUID,
}
_BYTES_LIKE = (bytes, bytearray, memoryview)
# Pony's sql2py steps that give a value of the attribute's own type back unchanged.
_KEEPS_OWN_TYPE = frozenset(
    {Converter.sql2py, IntConverter.sql2py, BoolConverter.sql2py, RealConverter.sql2py}
)
_INT64 = 2**63


def _same_column_value(back: Any, value: Any) -> bool:
    if isinstance(back, _BYTES_LIKE) and type(value) is bytes:
        return bytes(back) == value
    return type(back) is type(value) and back == value


def column_value_check(attr: Attribute, dialect: str) -> Callable[[Any], bool]:
    """A test that ``value`` is a column value :func:`column_value` can give for ``attr``.

    For values that come from outside (a keyset cursor): the value is read back as Pony reads a
    column (``sql2py``, ``dbval2val``), must then have exactly the attribute's type (for Pony's own
    types), and must convert back to itself, same type and value; an int must fit the column (its
    ``size``, 32 bits by default; 64 on SQLite), and values no row of this backend can hold (NaN, an
    infinite float on MySQL, a NUL character on PostgreSQL) are refused. None is accepted only for a
    nullable attribute.
    """
    converter = attr.converters[0]
    py_type = attr.py_type
    exact = _EXACT_TYPES.get(py_type)
    # Only the converter steps that do something: most are the base class's identity.
    sql2py = None if is_identity(converter.sql2py, Converter.sql2py) else converter.sql2py
    dbval2val = None if is_identity(converter.dbval2val, Converter.dbval2val) else converter.dbval2val
    val2dbval = None if is_identity(converter.val2dbval, Converter.val2dbval) else converter.val2dbval
    py2sql = None if is_identity(converter.py2sql, Converter.py2sql) else converter.py2sql
    nullable = bool(attr.nullable) and not attr.is_pk
    low, high = -_INT64, _INT64 - 1
    size = getattr(converter, "size", None)
    # An INTEGER column of SQLite holds 64 bits whatever its declared size; other backends hold the
    # size Pony declared (32 bits for a plain int).
    if size and dialect != "sqlite":
        unsigned = bool(getattr(converter, "unsigned", False))
        low, high = (0, 2**size - 1) if unsigned else (-(2 ** (size - 1)), 2 ** (size - 1) - 1)

    if (
        exact in (int, bool, float, str)
        and dbval2val is None
        and val2dbval is None
        and py2sql is None
        and getattr(converter.sql2py, "__func__", None) in _KEEPS_OWN_TYPE
    ):
        # Pony's own converter for a plain type: the value must be of that type, and nothing else
        # converts it, so the generic read-back below reduces to a type test (a cursor's usual case).
        def plain(value: Any) -> bool:
            kind = type(value)
            if kind is not exact:
                return value is None and nullable
            if kind is int:
                return bool(low <= value <= high)
            if kind is float:
                return math.isfinite(value) or (dialect != "mysql" and not math.isnan(value))
            return kind is bool or dialect != "postgres" or "\x00" not in value

        return plain

    def check(value: Any) -> bool:
        if value is None:
            return nullable
        try:
            python = value if sql2py is None else sql2py(value)
            if dbval2val is not None:
                python = dbval2val(python, None)
            # Pony's own types: exactly that type. Other types (ponykit's, enums) may read back as a
            # value of another class (AwareDatetime gives a datetime): the round trip decides.
            if exact is not None and type(python) is not exact:
                return False
            if exact is int and not low <= python <= high:
                return False
            if exact is float and not math.isfinite(python) and (dialect == "mysql" or math.isnan(python)):
                return False  # NaN is no sort position; MySQL holds no infinite float
            if exact is Decimal and not python.is_finite():
                return False
            if exact is str and dialect == "postgres" and "\x00" in python:
                return False
            back = python if val2dbval is None else val2dbval(python, None)
            if py2sql is not None:
                back = py2sql(back)
        except Exception:  # noqa: BLE001 - any failure to read the value back means it is not one
            return False
        return _same_column_value(back, value)

    return check


# N+1 diagnosis: which relation a repeated single-row SELECT is loading.

_FROM = re.compile(r"\bFROM\s+[`\"]?([^`\"\s]+)[`\"]?", re.IGNORECASE)
_WHERE_COL = re.compile(r"\bWHERE\s+(?:[`\"]\w+[`\"]\.)?[`\"]?(\w+)[`\"]?\s*(?:=|IN\b)", re.IGNORECASE)


def _table_name(table: Any) -> str:
    return str(table[-1] if isinstance(table, tuple) else table).lower()


def n_plus_one_culprit(db: Database, sql: str) -> tuple[str | None, str | None]:
    """``(entity, attribute)`` to prefetch for a statement Pony runs when loading one relation of one object.

    Reads the table after FROM and the first column compared in WHERE: a foreign key of a child table
    names the parent's collection, a link table names the many-to-many collection, a primary-key load
    of a lazy column names that attribute. ``(None, None)`` when the statement is not recognized.
    """
    from_match, where_match = _FROM.search(sql), _WHERE_COL.search(sql)
    if from_match is None or where_match is None:
        return None, None
    table, column = from_match.group(1).lower(), where_match.group(1)
    select_list = sql[: from_match.start()]
    for entity in db.entities.values():
        for attr in entity._new_attrs_:
            if attr.is_collection and attr.reverse is not None and attr.reverse.is_collection:
                owner_columns = attr.reverse_columns if attr.symmetric else attr.reverse.columns
                if attr.table is not None and _table_name(attr.table) == table and column in owner_columns:
                    return entity.__name__, attr.name
    for entity in db.entities.values():
        if entity._root_ is not entity or _table_name(entity._table_) != table:
            continue
        attrs = [*entity._attrs_, *entity._subclass_attrs_]
        for attr in attrs:
            if attr.reverse is not None and not attr.is_collection and column in attr.columns:
                return attr.py_type.__name__, attr.reverse.name
        if column in entity._pk_columns_:
            for attr in attrs:
                if attr.lazy and attr.columns and f"{attr.columns[0]}" in select_list:
                    return attr.entity.__name__, attr.name
        return entity.__name__, None
    return None, None
