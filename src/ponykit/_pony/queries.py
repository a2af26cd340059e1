"""Pony's ``Query``: its shape and order, its SQL and arguments, fetching it, raw filters, the query an N+1
statement came from, and keys that stay the same across processes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import pony.orm.core as _core
from pony.orm import Database
from pony.orm.ormtypes import RawSQL

from ._typing import Attribute, Entity
from .materialize import objects_from_rows
from .model import attr_is_lazy, table_key

__all__ = [
    "QuerySQL",
    "count_capped",
    "desc_of",
    "discriminator_filter",
    "entity_query_sql",
    "fetch",
    "fetch_entities",
    "filter_raw",
    "implicit_distinct",
    "is_query",
    "lost_distinct",
    "n_plus_one_culprit",
    "order_in_select",
    "order_item",
    "per_database_cache",
    "query_alias",
    "query_cache_sizes",
    "query_database",
    "query_entity",
    "query_key",
    "query_order",
    "query_parts",
    "query_shape",
    "query_source",
    "query_sql",
    "raw_sql_condition",
    "run_query_uncached",
    "sql_alias",
]


def discriminator_filter(entity: Entity) -> tuple[str, tuple[Any, ...]] | None:
    """``(column, values)`` restricting ``entity``'s table to rows of ``entity`` and its subclasses, or None.

    The values are the discriminators Pony's own criteria use (``_construct_discriminator_criteria_``:
    the entity's and every subclass's), as bound parameters. None when the entity has no discriminator
    or is the root of its hierarchy (every row of the table is one of its objects).
    """
    attr = entity._discriminator_attr_
    if attr is None or entity._root_ is entity:
        return None
    converter = attr.converters[0]
    values = [entity._discriminator_, *(sub._discriminator_ for sub in entity._subclasses_)]
    encoded = tuple(converter.py2sql(converter.val2dbval(v, None)) for v in dict.fromkeys(values))
    return attr.column, encoded


class QuerySQL(NamedTuple):
    """What a query sends to the database, and how to read its rows back.

    ``sql`` and ``arguments`` are exactly what Pony executes (arguments already converted by ``py2sql``;
    a tuple, or a dict for named paramstyles). ``cacheable`` is False for ``for_update()``,
    ``random()``, ``prefetch()`` and other queries whose results Pony itself never reuses. ``entity`` is
    the entity class of an entity select, else None; ``tuple_entities`` maps positions of a tuple select
    to the entity class found there.
    """

    query: Any
    sql: str
    arguments: Any
    attr_offsets: Any
    cacheable: bool
    entity: Entity | None
    tuple_entities: tuple[tuple[int, Entity], ...]
    limit: int | None
    offset: int | None


def query_source(obj: Any) -> tuple[Any, int | None, int | None] | None:
    """``(query, limit, offset)`` for a Pony ``Query`` or a not-yet-fetched ``QueryResult``, else None.

    ``query.limit(n)`` and ``query.page(p, n)`` give lazy QueryResults; ``query[:n]`` and
    ``query.fetch()`` fetch at once, so ponykit never sees them before the SQL has run.
    """
    if isinstance(obj, _core.Query):
        return obj, None, None
    if isinstance(obj, _core.QueryResult) and obj._items is None and obj._query is not None:
        return obj._query, obj._limit, obj._offset
    return None


def query_database(query: Any) -> Database:
    """The Database a query runs on."""
    return query._database


# (id(translator), slice and flags) -> (translator, sql, adapter, attr_offsets). Pony's own SQL cache is
# keyed by nested HashableDicts whose hashing costs more than a whole cache hit; a translator object
# already stands for one query shape (Pony makes a new one when a baked-in value changes), and the entry
# keeps it alive so its id cannot be reused.
_sql_memo: dict[tuple[Any, ...], tuple[Any, str, Any, Any]] = {}


def _constructed(query: Any, limit: int | None, offset: int | None) -> tuple[str, Any, Any]:
    translator = query._translator
    memo_key = (
        id(translator),
        limit,
        offset,
        query._distinct,
        query._for_update,
        query._nowait,
        query._skip_locked,
        query._prefetch,
        _core.options.INNER_JOIN_SYNTAX,
    )
    entry = _sql_memo.get(memo_key)
    if entry is not None and entry[0] is translator:
        return entry[1], entry[2](query._vars), entry[3]
    if _core.local.db_session is None:
        with _core.db_session:  # Pony's first build of a statement asks for the session cache
            sql, arguments, attr_offsets, _query_key = query._construct_sql_and_arguments(limit, offset)
    else:
        sql, arguments, attr_offsets, _query_key = query._construct_sql_and_arguments(limit, offset)
    if not query._prefetch:
        for cache_entry in list(query._database._constructed_sql_cache.values()):
            # Entries of queries are (sql, adapter, attr_offsets); bulk deletes store (sql, adapter).
            if len(cache_entry) == 3 and cache_entry[0] is sql and cache_entry[2] is attr_offsets:
                if len(_sql_memo) > 10_000:
                    _sql_memo.clear()
                _sql_memo[memo_key] = (translator, sql, cache_entry[1], attr_offsets)
                break
    return sql, arguments, attr_offsets


def query_sql(query: Any, limit: int | None = None, offset: int | None = None) -> QuerySQL:
    """The statement of ``query`` as Pony would build it (in a short db_session of its own if need be)."""
    sql, arguments, attr_offsets = _constructed(query, limit, offset)
    translator = query._translator
    expr_type = translator.expr_type
    entity = expr_type if isinstance(expr_type, _core.EntityMeta) else None
    tuple_entities: tuple[tuple[int, Any], ...] = ()
    if type(expr_type) is tuple:
        tuple_entities = tuple((i, t) for i, t in enumerate(expr_type) if isinstance(t, _core.EntityMeta))
    cacheable = bool(
        translator.query_result_is_cacheable
        and not query._for_update
        and not query._prefetch
        and (entity is None or attr_offsets is not None)
    )
    return QuerySQL(query, sql, arguments, attr_offsets, cacheable, entity, tuple_entities, limit, offset)


def run_query_uncached(q: QuerySQL) -> list[Any]:
    """Run ``q`` as Pony's ``_actual_fetch`` would, but never answer from the session's result cache.

    The session's ``query_results`` may hold rows read earlier in this transaction, before a commit that
    a shared cache has already seen; a shared cache must only store what the database says now.
    """
    query = q.query
    translator = query._translator
    database = query._database
    with query._prefetch_context:
        cache = database._get_cache()
        cache.prepare_connection_for_query_execution()
        cursor = database._exec_sql(q.sql, q.arguments)
        if q.entity is not None:
            return list(
                q.entity._fetch_objects(cursor, q.attr_offsets, used_attrs=translator.get_used_attrs())
            )
        if len(translator.row_layout) == 1:
            func = translator.row_layout[0][0]
            return [func(row[0]) for row in cursor.fetchall()]
        items = [
            tuple(func(sql_row[pos]) for func, pos, _src in translator.row_layout)
            for sql_row in cursor.fetchall()
        ]
        for i, t in q.tuple_entities:
            if t._subclasses_:
                t._load_many_(row[i] for row in items)
        return items


def fetch(query: Any, limit: int | None = None, offset: int | None = None) -> list[Any]:
    """Run a query exactly as Pony would (its per-session result cache included) and return a list."""
    return list(query._fetch(limit, offset))


def entity_query_sql(query: Any) -> tuple[Entity, str, Any]:
    """``(entity, sql, arguments)`` of a Pony query that selects whole objects of one entity.

    Raises TypeError for a query that selects something else (attributes, tuples, aggregates).
    """
    from pony.orm.core import EntityMeta, Query

    if not isinstance(query, Query):
        raise TypeError(f"expected a Pony query, got {type(query).__name__}")
    expr_type = query._translator.expr_type
    if not isinstance(expr_type, EntityMeta):
        raise TypeError("the query must select whole entity objects, e.g. select(p for p in Person if ...)")
    sql, arguments, _offsets, _key = query._construct_sql_and_arguments()
    return expr_type, sql, arguments


def is_query(value: Any) -> bool:
    """True if ``value`` is a Pony ``Query`` (``select(...)``, ``Entity.select(...)``)."""
    return isinstance(value, _core.Query)


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


_FROM = re.compile(r"\bFROM\s+[`\"]?([^`\"\s]+)[`\"]?", re.IGNORECASE)


_WHERE_COL = re.compile(r"\bWHERE\s+(?:[`\"]\w+[`\"]\.)?[`\"]?(\w+)[`\"]?\s*(?:=|IN\b)", re.IGNORECASE)


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
                if attr.table is not None and table_key(attr.table) == table and column in owner_columns:
                    return entity.__name__, attr.name
    for entity in db.entities.values():
        if entity._root_ is not entity or table_key(entity._table_) != table:
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


def query_parts(query: Any) -> tuple[Any, Any, int | None, int | None]:
    """``(query, result entity or None, limit, offset)`` of a Pony ``Query`` or a lazy ``QueryResult``.

    Anything else gives ``(None, None, None, None)``. The entity is None when the query selects
    something other than entity instances (tuples, attribute values, aggregates).
    """
    from pony.orm.core import EntityMeta, Query, QueryResult

    limit = offset = None
    if isinstance(query, QueryResult):
        if query._items is not None:  # already fetched: it is a list of objects now
            return None, None, None, None
        query, limit, offset = query._query, query._limit, query._offset
    if not isinstance(query, Query):
        return None, None, None, None
    expr_type = query._translator.expr_type
    entity = expr_type if isinstance(expr_type, EntityMeta) else None
    return query, entity, limit, offset


def sql_alias(var_name: str) -> str:
    """The SQL alias Pony gives the first table of a generator variable (``t`` is renamed ``t-1``)."""
    return var_name if var_name != "t" else "t-1"


def raw_sql_condition(sql: str, values: dict[str, Any]) -> Any:
    """A ``raw_sql`` object usable as a generator-query condition: ``$name`` refers to ``values[name]``."""
    from pony.orm.ormtypes import RawSQL

    return RawSQL(sql, {}, dict(values), bool)
