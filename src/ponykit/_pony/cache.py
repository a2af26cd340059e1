"""Cache (ponykit.query.cache): stable query keys, rebuilding entities from rows or keys."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, NamedTuple

import pony.orm.core as _core
from pony.orm import Database

from ._typing import Entity
from .database import converter_base, dialect
from .entities import collection_attr_info, entities_of, entity_lineage

__all__ = [
    "QuerySQL",
    "entity_by_raw_pk",
    "entity_rows",
    "fetch",
    "has_subclasses",
    "in_flush",
    "load_seeds",
    "mapping_signature",
    "query_database",
    "query_source",
    "query_sql",
    "rebuild_entities",
    "run_query_uncached",
    "server_identity",
    "snapshot_may_predate",
    "table_entities",
    "unflushed_entities",
]


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


@dataclass(frozen=True)
class _RowLayout:
    entity: Any
    attrs: tuple[Any, ...]  # non-pk attributes the query loads, in the stored order
    relations: tuple[tuple[int, Any], ...]  # (position in attrs, related entity) of to-one relations
    converted: tuple[tuple[int, Any], ...]  # (position, converter) whose dbval2val is not the identity
    unique: tuple[tuple[int, Any], ...]  # (position, attribute) of simple unique keys
    composite_keys: tuple[tuple[Any, ...], ...]
    pk_has_relation: bool


_layouts: dict[tuple[Any, str], _RowLayout] = {}


def _row_layout(entity: Any, sql: str, attr_offsets: Any) -> _RowLayout:
    key = (entity, sql)
    layout = _layouts.get(key)
    if layout is not None:
        return layout
    base_converter = converter_base()
    attrs = tuple(a for a in entity._attrs_ if a in attr_offsets and a.pk_offset is None)
    relations = tuple((i, a.py_type) for i, a in enumerate(attrs) if a.reverse)
    converted = tuple(
        (i, a.converters[0])
        for i, a in enumerate(attrs)
        if not a.reverse and type(a.converters[0]).dbval2val is not base_converter.dbval2val  # type: ignore[attr-defined]
    )
    unique = tuple((i, a) for i, a in enumerate(attrs) if a.is_unique and not a.is_discriminator)
    composite = tuple(keys for keys in entity._composite_keys_ if all(a in attrs for a in keys))
    layout = _RowLayout(
        entity,
        attrs,
        relations,
        converted,
        unique,
        composite,
        any(a.reverse for a in entity._pk_attrs_),
    )
    if len(_layouts) > 10_000:  # bounded: SQL texts of a process are few, but never let it grow forever
        _layouts.clear()
    _layouts[key] = layout
    return layout


def _plain(value: Any) -> Any:
    """An entity instance (a relation's dbval) as its raw primary-key tuple; anything else unchanged."""
    if isinstance(type(value), _core.EntityMeta):
        return tuple(value._get_raw_pkval_())
    return value


def entity_rows(q: QuerySQL, objects: list[Any]) -> tuple[tuple[str, Any, tuple[Any, ...]], ...]:
    """The plain rows behind entity results: ``(class name, raw pk tuple, db values of loaded attrs)``.

    The values are Pony's ``_dbvals_`` (what the row parser produced, before ``dbval2val``), relations
    replaced by the related object's raw primary key, so the rows hold primitives only.
    """
    rows = []
    layouts: dict[Any, _RowLayout] = {}
    for obj in objects:
        cls = type(obj)
        layout = layouts.get(cls)
        if layout is None:
            layout = layouts[cls] = _row_layout(cls, q.sql, q.attr_offsets)
        values = tuple(map(obj._dbvals_.get, layout.attrs))
        if layout.relations:
            as_list = list(values)
            for i, _related in layout.relations:
                as_list[i] = _plain(as_list[i])
            values = tuple(as_list)
        pkval = obj._pkval_
        raw_pk = tuple(obj._get_raw_pkval_()) if layout.pk_has_relation or cls._pk_is_composite_ else (pkval,)
        rows.append((cls.__name__, raw_pk, values))
    return tuple(rows)


def rebuild_entities(q: QuerySQL, rows: tuple[tuple[str, Any, tuple[Any, ...]], ...]) -> list[Any]:
    """Turn rows from :func:`entity_rows` into entities of the current session, without SQL.

    An object already in the session's identity map is updated through Pony's own ``_db_set_`` (so a
    changed value it has already read raises ``UnrepeatableReadError`` as a fresh query would). A new
    object is put into the identity map the way ``_get_from_identity_map_`` + ``_db_set_`` would, minus
    their generic checks: values, db values, unique indexes, reverse relations, then read bits.
    """
    entity = q.entity
    assert entity is not None
    database = entity._database_
    cache = database._get_cache()
    cache.prepare_connection_for_query_execution()  # flushes like a query would; starts the session
    classes = database.entities
    objects = []
    deleted = _core.del_statuses
    for class_name, raw_pk, values in rows:
        cls = classes[class_name]
        layout = _row_layout(cls, q.sql, q.attr_offsets)
        dbvals_list = list(values)
        for i, related in layout.relations:
            raw = dbvals_list[i]
            if raw is not None:
                dbvals_list[i] = related._get_by_raw_pkval_(raw)
        index = cache.indexes[cls._pk_attrs_]
        if layout.pk_has_relation:
            obj = cls._get_by_raw_pkval_(raw_pk)
        else:
            pkval = raw_pk if cls._pk_is_composite_ else raw_pk[0]
            obj = index.get(pkval)
            if obj is None:
                obj = _new_loaded(cls, cache, index, pkval, layout, dbvals_list)
                objects.append(obj)
                continue
            obj = cls._get_from_identity_map_(pkval, "loaded")
        if obj._status_ in deleted:
            continue
        obj._db_set_(dict(zip(layout.attrs, dbvals_list, strict=True)))
        objects.append(obj)
    used = q.query._translator.get_used_attrs()
    if used:
        entity._set_rbits(objects, used)
    return objects


def _new_loaded(cls: Any, cache: Any, index: Any, pkval: Any, layout: _RowLayout, dbvals: list[Any]) -> Any:
    obj = object.__new__(cls)
    pk_attrs = cls._pk_attrs_
    cache.objects.add(obj)
    obj._pkval_ = pkval
    obj._status_ = "loaded"
    obj._save_pos_ = None
    obj._session_cache_ = cache
    obj._newid_ = None
    obj._rbits_ = obj._wbits_ = 0
    index[pkval] = obj
    vals = dict(zip(pk_attrs, pkval, strict=True)) if cls._pk_is_composite_ else {pk_attrs[0]: pkval}
    dbvals_dict = dict(zip(layout.attrs, dbvals, strict=True))
    obj._dbvals_ = dbvals_dict
    vals.update(dbvals_dict)
    for i, converter in layout.converted:
        dbval = dbvals[i]
        vals[layout.attrs[i]] = converter.dbval2val(dbval, obj)
    obj._vals_ = vals
    for i, _related in layout.relations:
        value = dbvals[i]
        if value is not None:
            layout.attrs[i].db_update_reverse(obj, _core.NOT_LOADED, value)
    for _i, attr in layout.unique:
        cache.db_update_simple_index(obj, attr, None, vals[attr])
    for attrs in layout.composite_keys:
        cache.db_update_composite_index(obj, attrs, None, tuple(vals[a] for a in attrs))
    return obj


def entity_by_raw_pk(entity: Entity, raw_pk: tuple[Any, ...]) -> Any:
    """The session's object for a raw primary key, a not-yet-loaded seed if needed (no SQL)."""
    return entity._get_by_raw_pkval_(raw_pk)


def load_seeds(entity: Entity, objects: Any) -> None:
    """Load not-yet-loaded objects of ``entity`` in batches (what Pony does for subclass rows)."""
    entity._load_many_(objects)


def has_subclasses(entity: Entity) -> bool:
    """True if other entities inherit from ``entity``."""
    return bool(entity._subclasses_)


def unflushed_entities(db: Database) -> set[str]:
    """Names of entities (and their bases) with changes in this session not yet flushed to the database."""
    cache = _core.local.db2cache.get(db)
    if cache is None or not cache.modified:
        return set()
    names: set[str] = set()
    for obj in cache.objects_to_save:
        if obj is not None:
            names.update(c.__name__ for c in entity_lineage(type(obj)))
    for attr in cache.modified_collections:
        entity, related, many = collection_attr_info(attr)
        names.update(c.__name__ for c in entity_lineage(entity))
        if many:
            names.update(c.__name__ for c in entity_lineage(related))
    return names


def snapshot_may_predate(db: Database) -> bool:
    """True if the current transaction may read from a snapshot taken before now.

    MySQL/MariaDB (REPEATABLE READ) and Oracle sessions are always transactional, and serializable
    sessions keep one snapshot: once their transaction is open, a query can return rows older than
    generations read a moment ago. READ COMMITTED (PostgreSQL's default) and SQLite's locking never do.
    """
    cache = _core.local.db2cache.get(db)
    if cache is None or not cache.in_transaction:
        return False
    session = cache.db_session
    return dialect(db) in ("mysql", "oracle") or bool(session is not None and session.serializable)


def in_flush(db: Database) -> bool:
    """True while Pony flushes this session (its own INSERT/UPDATE/DELETE statements run then)."""
    cache = _core.local.db2cache.get(db)
    return bool(cache is not None and cache.noflush_counter)


def server_identity(db: Database) -> tuple[str, ...]:
    """What identifies the data ``db`` reaches on its server, the same from every client that reaches it.

    Asked of the server on a short connection of its own (never the session's: it may be inside a
    transaction), so client options (application_name, timeouts, host spellings, PyMySQL's ``conv``,
    PgBouncer in between) never change it: ``("postgres", database, current schema, system identifier or
    "")``, ``("mysql", database)``, ``("sqlite", real path of the file)``. An in-memory SQLite database
    is private to its process and Database, and so is its identity. Never holds a password.
    """
    name = dialect(db)
    pool = db.provider.pool
    if name == "sqlite":
        filename = str(getattr(pool, "filename", ""))
        if (
            getattr(pool, "is_shared_memory_db", False)
            or filename in ("", ":memory:")
            or "mode=memory" in filename
        ):
            return ("sqlite", ":memory:", str(os.getpid()), str(id(db)))
        return ("sqlite", os.path.realpath(filename))
    con = pool.dbapi_module.connect(*pool.args, **pool.kwargs)
    try:
        cursor = con.cursor()
        if name == "cockroach":
            cursor.execute("SELECT current_database(), current_schema()")
            return ("cockroach", *map(str, cursor.fetchone()))
        if name == "postgres":
            # The system identifier tells two clusters apart (a physical replica shares its primary's).
            # Read only when PUBLIC may, so that every role of one cluster computes the same identity.
            cursor.execute(
                "SELECT current_database(), current_schema(), "
                "has_function_privilege('public', 'pg_control_system()', 'EXECUTE')"
            )
            database, schema, readable = cursor.fetchone()
            system = ""
            if readable:
                cursor.execute("SELECT system_identifier::text FROM pg_control_system()")
                system = cursor.fetchone()[0]
            return ("postgres", str(database), str(schema), system)
        if name == "mysql":
            cursor.execute("SELECT DATABASE()")
            return ("mysql", str(cursor.fetchone()[0]))
        return (name,)  # other providers: the dialect alone (the docs ask for a namespace= then)
    finally:
        try:
            con.rollback()
        finally:
            con.close()


def mapping_signature(db: Database) -> tuple[Any, ...]:
    """The tables, columns and attribute types of every entity of ``db``: part of a cache key, so a
    changed mapping (another version of the application) never reads entries written under the old one.
    Plain strings only (no reprs of objects), so it is the same in every process."""

    def type_name(attr: Any) -> str:
        # The qualified name without the module: one class imported under two module paths (``__main__``
        # in one process, ``app.models`` in another) is the same type.
        py_type = attr.py_type
        return str(getattr(py_type, "__qualname__", py_type))

    return tuple(
        sorted(
            (
                name,
                repr(e._table_),
                tuple(e._columns_),
                tuple((a.name, type_name(a), tuple(a.columns)) for a in e._attrs_),
            )
            for name, e in entities_of(db).items()
        )
    )


def table_entities(db: Database) -> dict[str, frozenset[Any]]:
    """Lower-cased unqualified table name -> entity classes whose rows a write to that table changes.

    A table shared by an inheritance hierarchy maps to every entity of it; a many-to-many link table
    maps to the entities on both sides.
    """
    found: dict[str, set[Any]] = defaultdict(set)

    def norm(table: Any) -> str:
        return (table[-1] if isinstance(table, tuple) else str(table)).lower()

    for entity in entities_of(db).values():
        found[norm(entity._table_)].add(entity)
        for attr in entity._attrs_:
            if attr.is_collection and attr.reverse is not None and attr.reverse.is_collection:
                found[norm(attr.table)].update((entity, attr.py_type))
    return {k: frozenset(v) for k, v in found.items()}


def fetch(query: Any, limit: int | None = None, offset: int | None = None) -> list[Any]:
    """Run a query exactly as Pony would (its per-session result cache included) and return a list."""
    return list(query._fetch(limit, offset))
