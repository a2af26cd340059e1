"""The one door into Pony's internals.

Every use of a private Pony name lives here, behind small functions with their own tests
(``tests/test_pony.py``), so that a Pony upgrade is one file's work. The rest of ponykit asks this module
and never reaches into ``pony.orm.core`` itself.

Written against Pony 0.7.20; ``../shared/docs/pony-internals.md`` maps what is used. Nothing here patches
a Pony class for the whole process: provider methods are wrapped on one provider *instance*, converter
lists are shadowed on one provider *instance*, and write tracking is installed on the entity classes of
one ``Database``.
"""

from __future__ import annotations

import functools
import os
import re
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pony.orm.core as _core
from pony.orm import Database

__all__: list[str] = []  # private module: import names explicitly

Entity = Any  # a Pony entity class; Pony ships no type information
Attribute = Any
SessionCache = Any

# ---------------------------------------------------------------------------------------------------------
# Database state


def is_bound(db: Database) -> bool:
    """True once ``db.bind(...)`` has succeeded."""
    return db.provider is not None


def is_mapped(db: Database) -> bool:
    """True once ``db.generate_mapping(...)`` has run."""
    return db.schema is not None


def dialect(db: Database) -> str:
    """The backend family: ``'sqlite'``, ``'postgres'``, ``'mysql'``, ``'cockroach'`` or ``'oracle'``."""
    provider = db.provider
    name = db.provider_name
    if name in ("sqlite", "postgres", "mysql", "cockroach", "oracle"):
        return str(name)
    return {"SQLite": "sqlite", "PostgreSQL": "postgres", "MySQL": "mysql", "Oracle": "oracle"}[
        provider.dialect
    ]


def max_params(db: Database) -> int:
    """How many bound parameters one statement may carry on this backend."""
    return int(db.provider.max_params_count)


def paramstyle(db: Database) -> str:
    """The DB-API paramstyle of the driver: ``qmark``, ``format``, ``pyformat`` or ``named``."""
    return str(db.provider.paramstyle)


def quote_name(db: Database, name: str | tuple[str, ...]) -> str:
    """Quote a table or column name (or a ``(schema, table)`` pair) the way Pony does."""
    return str(db.provider.quote_name(name))


# ---------------------------------------------------------------------------------------------------------
# Sessions


def session_cache(db: Database) -> SessionCache | None:
    """The current thread's session cache for ``db``, or None if this session has not touched ``db`` yet."""
    return _core.local.db2cache.get(db)


def require_session_cache(db: Database) -> SessionCache:
    """The current thread's session cache for ``db``, created if needed; raises outside a db_session."""
    return db._get_cache()


def connect_session(db: Database) -> SessionCache:
    """Make sure the current session holds a connection to ``db`` and return its cache.

    A cache without a connection is closed by Pony without calling the provider at all; ponykit needs
    the provider's commit/rollback/release calls to see the session end, so it connects first.
    """
    cache = db._get_cache()
    if cache.connection is None:
        cache.prepare_connection_for_query_execution()
    return cache


def in_db_session() -> bool:
    """True inside a ``db_session`` (at any nesting depth)."""
    return _core.local.db_session is not None


def session_depth() -> int:
    """How many ``db_session`` blocks are open in this thread (0 while the outermost one is exiting)."""
    return int(_core.local.db_context_counter)


def is_in_transaction(cache: SessionCache) -> bool:
    """True while the cache's connection has an open database transaction."""
    return bool(cache.in_transaction)


def is_alive(cache: SessionCache) -> bool:
    """False once Pony has closed the cache (after commit-and-release or rollback)."""
    return bool(cache.is_alive)


def connected_caches() -> list[SessionCache]:
    """The session caches of this thread that still hold a connection."""
    return [c for c in _core.local.db2cache.values() if c.connection is not None]


def release_idle_caches() -> None:
    """Close this thread's session caches that never connected (pure bookkeeping, no SQL)."""
    for cache in list(_core.local.db2cache.values()):
        if cache.connection is None:
            cache.release()


@contextmanager
def outside_session() -> Iterator[None]:
    """Run a block as if no db_session were open in this thread, then restore the session state.

    Used to run on_commit callbacks while Pony is still unwinding the outermost ``db_session``: the
    callbacks may open their own ``db_session`` and must not join (or trip the assertions of) the one
    that is ending. Caches of the ending session that are not released yet are hidden and put back.
    """
    local = _core.local
    saved_session, saved_counter = local.db_session, local.db_context_counter
    saved_caches = dict(local.db2cache)
    local.db_session, local.db_context_counter = None, 0
    local.db2cache.clear()
    try:
        yield
    finally:
        # Callbacks open and close their own sessions, so nothing of theirs is left; restore ours.
        local.db2cache.clear()
        local.db2cache.update(saved_caches)
        local.db_session, local.db_context_counter = saved_session, saved_counter


# ---------------------------------------------------------------------------------------------------------
# Provider interception, per provider instance


_WRAPPED = "_ponykit_wrapped_"


def wrap_provider_method(
    db: Database, name: str, make_wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Replace ``db.provider.<name>`` on this provider instance with ``make_wrapper(original)``.

    The class attribute is untouched, so other Databases (even of the same dialect) are unaffected.
    Wrapping the same method twice raises, so a second ``attach`` can never stack hooks.
    """
    provider = db.provider
    if name in vars(provider) and getattr(vars(provider)[name], _WRAPPED, False):
        raise RuntimeError(f"provider.{name} of {db!r} is already wrapped by ponykit")
    original = getattr(provider, name)
    wrapper = functools.wraps(original)(make_wrapper(original))
    setattr(wrapper, _WRAPPED, True)
    setattr(provider, name, wrapper)


def is_provider_method_wrapped(db: Database, name: str) -> bool:
    """True if ``db.provider.<name>`` carries a ponykit wrapper."""
    return bool(getattr(vars(db.provider).get(name), _WRAPPED, False))


# ---------------------------------------------------------------------------------------------------------
# Converters


def install_converters(db: Database, pairs: list[tuple[type, type]]) -> None:
    """Put ``(py_type, ConverterClass)`` pairs in front of this provider instance's converter list.

    Pony picks the first entry whose type ``issubclass`` matches, so ponykit's entries win over the
    dialect's own (a ``str``-based Enum would otherwise map to plain ``StrConverter``). The class-level
    list is left alone: other Databases never see these converters.
    """
    provider = db.provider
    current = list(provider.converter_classes)
    new_types = {t for t, _ in pairs}
    kept = [(t, c) for t, c in current if t not in new_types]
    provider.converter_classes = list(pairs) + kept


def converter_class_for(db: Database, py_type: type) -> type:
    """The converter class this Database's provider would use for ``py_type``."""
    return db.provider._get_converter_type_by_py_type(py_type)  # type: ignore[no-any-return]


def converter_base() -> type:
    """Pony's base ``Converter`` class, for ponykit types to subclass."""
    from pony.orm.dbapiprovider import Converter

    return Converter  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------------------
# Entity metadata


@dataclass(frozen=True)
class LinkTable:
    """A many-to-many link table: ``attr`` of ``entity`` is stored in ``table``."""

    attr: str
    table: str | tuple[str, ...]
    columns: tuple[str, ...]  # the columns that point at this entity
    reverse_columns: tuple[str, ...]  # the columns that point at the related entity


@dataclass(frozen=True)
class EntityInfo:
    """What a mapped entity looks like in the database."""

    name: str
    table: str | tuple[str, ...]
    columns: tuple[str, ...]
    pk_attrs: tuple[str, ...]
    pk_columns: tuple[str, ...]
    pk_is_composite: bool
    column_attrs: tuple[str, ...]  # attributes stored in this entity's table, in column order
    discriminator: tuple[str, str, Any] | None  # (attribute, column, this entity's code)
    keys: tuple[tuple[str, ...], ...]  # unique keys other than the primary key, by attribute name
    link_tables: tuple[LinkTable, ...]


_info_cache: weakref.WeakKeyDictionary[Any, EntityInfo] = weakref.WeakKeyDictionary()


def entity_info(entity: Entity) -> EntityInfo:
    """Mapping metadata of a mapped entity (cached per entity class)."""
    info = _info_cache.get(entity)
    if info is not None:
        return info
    if entity._database_.schema is None:
        raise RuntimeError(f"entity {entity.__name__} is not mapped yet: call db.generate_mapping() first")
    disc_attr = entity._discriminator_attr_
    discriminator = None
    if disc_attr is not None:
        discriminator = (disc_attr.name, disc_attr.column, entity._discriminator_)
    keys: list[tuple[str, ...]] = []
    for attrs in entity._keys_:
        keys.append(tuple(a.name for a in attrs))
    links = []
    for attr in entity._attrs_:
        if attr.is_collection and attr.reverse is not None and attr.reverse.is_collection:
            links.append(
                LinkTable(
                    attr=attr.name,
                    table=attr.table,
                    columns=tuple(attr.reverse_columns) if attr.symmetric else tuple(attr.reverse.columns),
                    reverse_columns=tuple(attr.columns),
                )
            )
    info = EntityInfo(
        name=entity.__name__,
        table=entity._table_,
        columns=tuple(entity._columns_),
        pk_attrs=tuple(a.name for a in entity._pk_attrs_),
        pk_columns=tuple(entity._pk_columns_),
        pk_is_composite=bool(entity._pk_is_composite_),
        column_attrs=tuple(a.name for a in entity._attrs_with_columns_),
        discriminator=discriminator,
        keys=tuple(keys),
        link_tables=tuple(links),
    )
    _info_cache[entity] = info
    return info


def column_converters(entity: Entity) -> dict[str, list[Any]]:
    """The Pony converters of each attribute stored in the entity's table, by attribute name.

    A to-one relation has the converters of the related entity's primary-key columns.
    """
    return {a.name: list(a.converters) for a in entity._attrs_with_columns_}


def entity_attribute(entity: Entity, name: str) -> Attribute:
    """The attribute object called ``name``; raises AttributeError naming the entity if there is none."""
    attr = entity._adict_.get(name)
    if attr is None:
        raise AttributeError(f"entity {entity.__name__} has no attribute {name!r}")
    return attr


def entities_of(db: Database) -> dict[str, Entity]:
    """The entity classes declared on ``db``, by name."""
    return dict(db.entities)


def database_of(entity: Entity) -> Database:
    """The Database an entity class belongs to."""
    return entity._database_


def entity_lineage(entity: Entity) -> list[Any]:
    """The entity and every entity it inherits from, most derived first."""
    return [c for c in entity.__mro__ if c in entity._all_bases_ or c is entity]


def primary_key(obj: Any) -> Any:
    """The primary key of an entity instance: a scalar, or a tuple for composite keys."""
    return obj._pkval_


def raw_primary_key(obj: Any) -> tuple[Any, ...]:
    """The primary key of an instance as a flat tuple of column values (relations replaced by keys)."""
    return tuple(obj._get_raw_pkval_())


# ---------------------------------------------------------------------------------------------------------
# Values: what Pony binds and what it reads back


DEFAULT: Any = _core.DEFAULT  # "not given": encode_value then applies the attribute's default


def encode_value(attr: Attribute, value: Any) -> tuple[Any, ...]:
    """The column values Pony would bind when ``value`` is assigned to ``attr``.

    Runs the attribute's own validation (``validate`` of the converter, ``py_check``, min/max/max_len,
    required checks) and then ``val2dbval`` and ``py2sql``, exactly as an INSERT through an entity would.
    Relations accept an entity instance or its primary key and give the target's primary-key columns.
    Pass :data:`DEFAULT` for a value that was not given: the attribute's default applies (``''`` for an
    ``Optional(str)``, as Pony stores it).
    """
    val = attr.validate(value, None, attr.entity)
    if val is None:
        return (None,) * max(len(attr.columns), 1)
    if attr.reverse is not None:  # a to-one relation: bind the related object's primary key columns
        raw = val._get_raw_pkval_()
        return tuple(c.py2sql(c.val2dbval(v, None)) for c, v in zip(attr.converters, raw, strict=True))
    converter = attr.converters[0]
    return (converter.py2sql(converter.val2dbval(val, None)),)


def decode_value(attr: Attribute, raw: Any) -> Any:
    """The Python value Pony would give ``attr`` for a raw column value read from the driver."""
    if raw is None:
        return None
    converter = attr.converters[0]
    return converter.dbval2val(converter.sql2py(raw), None)


# ---------------------------------------------------------------------------------------------------------
# Write tracking: which entities and keys a transaction wrote

WriteRecorder = Callable[[Any, Any, str], None]  # (cache, entity instance, status)
LinkRecorder = Callable[[Any, Any, Any], None]  # (cache, collection attribute, owner instance)


def install_write_hooks(db: Database, record: WriteRecorder) -> None:
    """Call ``record(cache, obj, status)`` after Pony saves an object of ``db`` (inserted/updated/deleted).

    Wraps ``_after_save_`` on the entity classes of this Database only, each at most once. Entities
    declared later are picked up by calling this again (it is cheap when nothing is new).
    """
    hooked: set[Any] = db.__dict__.setdefault("_ponykit_hooked_entities_", set())
    if len(hooked) == len(db.entities):
        return
    for entity in db.entities.values():
        if entity in hooked:
            continue
        hooked.add(entity)
        # A subclass inherits its root's wrapper; wrap it only if it overrides _after_save_ itself.
        if entity._root_ is not entity and "_after_save_" not in vars(entity):
            continue
        original = entity._after_save_

        def after_save(obj: Any, status: str, _original: Any = original) -> None:
            record(obj._session_cache_, obj, status)
            _original(obj, status)

        entity._after_save_ = after_save


def track_collection_changes(cache: SessionCache, record: LinkRecorder) -> None:
    """Report many-to-many changes of one session cache through ``record(cache, attr, owner)``.

    Pony keeps the collections changed since the last flush in ``cache.modified_collections`` and clears
    that mapping in place while flushing. ponykit swaps in a mapping that reports its contents just
    before each clear, so link-table writes reach the commit events like row writes do.
    """
    current = cache.modified_collections
    if isinstance(current, _ReportingCollections):
        return
    replacement = _ReportingCollections(cache, record)
    replacement.update(current)
    cache.modified_collections = replacement


class _ReportingCollections(defaultdict):  # type: ignore[type-arg]
    def __init__(self, cache: SessionCache, record: LinkRecorder) -> None:
        super().__init__(set)
        self._cache = weakref.ref(cache)
        self._record = record

    def clear(self) -> None:
        cache = self._cache()
        if cache is not None:
            for attr, owners in self.items():
                for owner in owners:
                    self._record(cache, attr, owner)
        super().clear()


def collection_attr_info(attr: Attribute) -> tuple[Any, Any, bool]:
    """``(entity, related_entity, is_many_to_many)`` for a collection attribute."""
    reverse = attr.reverse
    return attr.entity, attr.py_type, bool(reverse is not None and reverse.is_collection)


def getpid() -> int:
    """The current process id (Pony's pool reconnects after fork; so do ponykit's per-process states)."""
    return os.getpid()


# =========================================================================================================
# Sections added by later capabilities. Each area keeps to its own section so changes merge cleanly.
# =========================================================================================================

# ---------------------------------------------------------------------------------------------------------
# Attribute types (ponykit.types, ponykit.security): converters, query-parameter normalization


# ---------------------------------------------------------------------------------------------------------
# Bulk writes (ponykit.bulk): executing batches in the session's transaction, identity-map upkeep


# ---------------------------------------------------------------------------------------------------------
# Queries (ponykit.query, ponykit.diagnostics): SQL and arguments of a query, order, prefetch, statement hooks

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


def is_query(value: Any) -> bool:
    """True for a Pony ``Query`` object."""
    return isinstance(value, _core.Query)


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


def filter_raw(query: Any, sql: str, values: list[Any]) -> Any:
    """``query.filter(raw_sql(sql))`` where ``$v[0]``, ``$v[1]``... in ``sql`` are bound from ``values``.

    The values are parameters (never inlined), and the SQL text alone keys Pony's translator cache, so
    one shape of filter costs one translation however many different values it is used with.
    """
    from pony.orm.ormtypes import RawSQL

    return query.filter(RawSQL(sql, {}, {"v": values}))


def query_key(query: Any) -> Any:
    """A hashable, process-local key of a query's shape (code, variable types, filters, order)."""
    return query._key


def fetch_entities(query: Any, limit: int) -> list[Any]:
    """The first ``limit`` objects of an entity query, built by :func:`materialize`.

    Same SQL and the same session state as ``query[:limit]``, without Pony's generic row parser; a
    query with ``prefetch()`` or ``for_update()`` goes through Pony's own fetch.
    """
    if query._prefetch or query._for_update:
        return list(query[:limit])
    entity = query._translator.expr_type
    sql, arguments, attr_offsets, _key = query._construct_sql_and_arguments(limit=limit)
    rows = query._database._exec_sql(sql, arguments).fetchall()
    return materialize(entity, rows, attr_offsets)


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


# Prefetch: loading relations of many objects at once and filling Pony's session cache with them.


def relation_kind(attr: Attribute) -> str | None:
    """``'to_one'``, ``'one_to_many'``, ``'many_to_many'``, ``'lazy'``, or None for a plain eager column."""
    if attr.is_collection:
        if attr.reverse is None:
            return None
        return "many_to_many" if attr.reverse.is_collection else "one_to_many"
    if attr.reverse is not None:
        return "to_one"
    if attr.lazy and attr.columns:
        return "lazy"
    return None


def is_entity_instance(value: Any) -> bool:
    """True for an instance of any Pony entity."""
    return isinstance(value, _core.Entity)


def is_deleted_or_new(obj: Any) -> bool:
    """True for objects that have no row to load relations from (created and not flushed, or deleted)."""
    return obj._status_ in ("created", "cancelled", "marked_to_delete", "deleted")


def loaded_value(obj: Any, attr: Attribute) -> Any:
    """The value of ``attr`` held in the session for ``obj`` (without loading, without marking it read).

    Returns ``_core.NOT_LOADED`` when the session has no value yet.
    """
    return obj._vals_.get(attr, _core.NOT_LOADED)


def not_loaded() -> Any:
    """Pony's NOT_LOADED sentinel."""
    return _core.NOT_LOADED


def is_seed(obj: Any) -> bool:
    """True for an object known only by its primary key (its columns are not loaded yet)."""
    cache = obj._session_cache_
    return obj in cache.seeds[obj._pk_attrs_]


def collection_items(obj: Any, attr: Attribute) -> set[Any] | None:
    """The objects of a fully loaded collection of ``obj``, or None when it is not fully loaded."""
    setdata = obj._vals_.get(attr)
    if setdata is None or not setdata.is_fully_loaded:
        return None
    return set(setdata)


def _select_columns(entity: Entity) -> tuple[list[str], dict[Any, list[int]]]:
    # Same columns, same offsets as Pony's own batch loads (_construct_select_clause_, all_attributes).
    root = entity._root_
    columns: list[str] = []
    offsets: dict[Any, list[int]] = {}
    for attr in (*root._attrs_, *root._subclass_attrs_):
        if attr.is_collection or not attr.columns or attr.lazy:
            continue
        offsets[attr] = list(range(len(columns), len(columns) + len(attr.columns)))
        columns.extend(attr.columns)
    return columns, offsets


def _placeholders(db: Database, count: int) -> list[str]:
    mark = "?" if db.provider.paramstyle == "qmark" else "%s"
    return [mark] * count


def _in_condition(db: Database, alias: str, columns: list[str], count: int) -> str:
    q = db.provider.quote_name
    if len(columns) == 1:
        return f"{q(alias)}.{q(columns[0])} IN ({', '.join(_placeholders(db, count))})"
    mark = _placeholders(db, 1)[0]
    one = " AND ".join(f"{q(alias)}.{q(c)} = {mark}" for c in columns)
    return "(" + " OR ".join(f"({one})" for _ in range(count)) + ")"


def _raw_keys(objects: list[Any]) -> list[tuple[Any, ...]]:
    result = []
    for obj in objects:
        converters = obj._pk_converters_
        raw = obj._get_raw_pkval_()
        result.append(tuple(c.py2sql(v) for c, v in zip(converters, raw, strict=True)))
    return result


def _chunks(db: Database, items: list[Any], width: int) -> Iterator[list[Any]]:
    size = max(1, int(db.provider.max_params_count) // max(width, 1))
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _select_sql(entity: Entity, where_alias: str, extra: str = "") -> tuple[str, dict[Any, list[int]]]:
    db = entity._database_
    q = db.provider.quote_name
    columns, offsets = _select_columns(entity)
    select_list = ", ".join(f"{q('t')}.{q(c)}" for c in columns)
    return f"SELECT {select_list}{extra} FROM {q(entity._root_._table_)} {q('t')}", offsets


def _fast_path_ok(entity: Entity) -> bool:
    # New objects can be built directly when nothing but the primary key indexes them and no
    # discriminator picks their class; everything else goes through Pony's own _db_set_.
    cached = entity.__dict__.get("_ponykit_fast_load_")
    if cached is not None:
        return bool(cached)
    ok = (
        entity._discriminator_attr_ is None
        and not entity._composite_keys_
        and not any(a.pk_offset is not None and a.reverse for a in entity._pk_attrs_)
        and not any(a.is_unique and a.pk_offset is None for a in entity._attrs_)
        and not entity._subclasses_
    )
    entity._ponykit_fast_load_ = ok
    return ok


def materialize(entity: Entity, rows: list[Any], offsets: dict[Any, list[int]]) -> list[Any]:
    """Turn rows of ``entity``'s columns (laid out as ``offsets`` says) into session objects.

    Objects already in the identity map are refreshed through Pony's ``_db_set_`` (which detects
    unrepeatable reads and keeps local edits); new ones are built directly with the same state Pony
    would give them (values converted by each column's converter, reverse relations updated), which
    is several times faster than Pony's generic row parser.
    """
    cache = entity._database_._get_cache()
    index = cache.indexes[entity._pk_attrs_]
    fast = _fast_path_ok(entity)
    pk_attrs = entity._pk_attrs_
    pk_offsets = [offsets[a][0] for a in pk_attrs]
    # From the database a scalar key column is only sql2py-converted (Attribute.validate, from_db=True).
    pk_converters = [a.converters[0].sql2py for a in pk_attrs]
    composite = entity._pk_is_composite_
    plain: list[tuple[Any, int, Any, Any]] = []
    related: list[tuple[Any, list[int], Any, dict[Any, Any]]] = []
    for attr, offs in offsets.items():
        if attr.pk_offset is not None:
            continue
        if attr.reverse is not None:
            related.append((attr, offs, attr.py_type._get_by_raw_pkval_, {}))
        else:
            conv = attr.converters[0]
            plain.append((attr, offs[0], conv.sql2py, conv.dbval2val))
    objects_add = cache.objects.add
    result = []
    for row in rows:
        if not fast:
            pkval: Any = None
        elif composite:
            pkval = tuple(c(row[o]) for c, o in zip(pk_converters, pk_offsets, strict=True))
        else:
            pkval = pk_converters[0](row[pk_offsets[0]])
        obj = index.get(pkval) if fast else None
        if obj is not None or not fast:
            real, pkval, avdict = entity._parse_row_(row, offsets)
            obj = real._get_from_identity_map_(pkval, "loaded")
            if obj._status_ in ("marked_to_delete", "deleted", "cancelled"):
                continue
            obj._db_set_(avdict)
            result.append(obj)
            continue
        obj = object.__new__(entity)
        objects_add(obj)
        obj._pkval_ = pkval
        obj._status_ = "loaded"
        vals: dict[Any, Any] = {}
        dbvals: dict[Any, Any] = {}
        if composite:
            vals.update(zip(pk_attrs, pkval, strict=True))
        else:
            vals[pk_attrs[0]] = pkval
        obj._vals_ = vals
        obj._dbvals_ = dbvals
        obj._save_pos_ = None
        obj._session_cache_ = cache
        obj._newid_ = None
        obj._rbits_ = obj._wbits_ = 0
        index[pkval] = obj
        for attr, off, sql2py, dbval2val in plain:
            raw = row[off]
            if raw is None:
                vals[attr] = dbvals[attr] = None
            else:
                dbval = sql2py(raw)
                dbvals[attr] = dbval
                vals[attr] = dbval2val(dbval, obj)
        for attr, offs, get_by_raw, known in related:
            raw_key = tuple(row[o] for o in offs)
            if raw_key[0] is None:
                target = None
            else:
                target = known.get(raw_key)
                if target is None:
                    target = known[raw_key] = get_by_raw(raw_key)
            vals[attr] = dbvals[attr] = target
            if target is not None:
                attr.db_update_reverse(obj, _core.NOT_LOADED, target)
        result.append(obj)
    return result


def load_by_pk(entity: Entity, objects: list[Any]) -> list[Any]:
    """Load the columns of ``objects`` (seeds of ``entity``) in one query per chunk of primary keys."""
    db = entity._database_
    root = entity._root_
    pk_columns = list(root._pk_columns_)
    loaded = []
    for chunk in _chunks(db, objects, len(pk_columns)):
        base, offsets = _select_sql(root, "t")
        sql = f"{base} WHERE {_in_condition(db, 't', pk_columns, len(chunk))}"
        args = tuple(v for key in _raw_keys(chunk) for v in key)
        rows = db._exec_sql(sql, args).fetchall()
        loaded.extend(materialize(root, rows, offsets))
    return loaded


def load_one_to_many(attr: Attribute, owners: list[Any]) -> None:
    """Fill the one-to-many collection ``attr`` of ``owners`` in one query per chunk of owners."""
    entity = attr.entity
    db = entity._database_
    reverse = attr.reverse
    child = reverse.entity
    fk_columns = list(reverse.columns)
    for obj in owners:
        if obj._vals_.get(attr) is None:
            obj._vals_[attr] = _core.SetData()
    for chunk in _chunks(db, owners, len(fk_columns)):
        base, offsets = _select_sql(child, "t")
        sql = f"{base} WHERE {_in_condition(db, 't', fk_columns, len(chunk))}"
        args = tuple(v for key in _raw_keys(chunk) for v in key)
        rows = db._exec_sql(sql, args).fetchall()
        # Children point at their owner through ``reverse``; building them adds them to its collection.
        materialize(child._root_, rows, offsets)
    _mark_loaded(attr, owners)


def load_many_to_many(attr: Attribute, owners: list[Any]) -> None:
    """Fill the many-to-many collection ``attr`` of ``owners``: link rows and targets in one joined query."""
    entity = attr.entity
    db = entity._database_
    q = db.provider.quote_name
    reverse = attr.reverse
    target = attr.py_type._root_
    if attr.symmetric:
        owner_cols, target_cols = list(attr.reverse_columns), list(attr.columns)
    else:
        owner_cols, target_cols = list(reverse.columns), list(attr.columns)
    columns, offsets = _select_columns(target)
    owner_offsets = list(range(len(columns), len(columns) + len(owner_cols)))
    select_list = ", ".join([f"{q('t')}.{q(c)}" for c in columns] + [f"{q('l')}.{q(c)}" for c in owner_cols])
    join = " AND ".join(
        f"{q('t')}.{q(pc)} = {q('l')}.{q(lc)}"
        for pc, lc in zip(target._pk_columns_, target_cols, strict=True)
    )
    base = (
        f"SELECT {select_list} FROM {q(attr.table)} {q('l')} "
        f"INNER JOIN {q(target._table_)} {q('t')} ON {join}"
    )
    found: dict[Any, set[Any]] = {obj: set() for obj in owners}
    target_pk = target._pk_attrs_
    for chunk in _chunks(db, owners, len(owner_cols)):
        sql = f"{base} WHERE {_in_condition(db, 'l', owner_cols, len(chunk))}"
        args = tuple(v for key in _raw_keys(chunk) for v in key)
        rows = db._exec_sql(sql, args).fetchall()
        # materialize() skips rows of objects deleted in this session: match rows to items by pk.
        item_by_pk = {it._pkval_: it for it in materialize(target, rows, offsets)}
        for row in rows:
            owner = entity._get_by_raw_pkval_([row[o] for o in owner_offsets])
            pk_vals = tuple(a.validate(row[offsets[a][0]], None, target, from_db=True) for a in target_pk)
            item = item_by_pk.get(pk_vals[0] if len(pk_vals) == 1 else pk_vals)
            if item is not None:
                found.setdefault(owner, set()).add(item)
    for owner, items in found.items():
        setdata = owner._vals_.get(attr)
        if setdata is None:
            setdata = owner._vals_[attr] = _core.SetData()
        elif setdata.is_fully_loaded:
            continue
        new = items - setdata
        if setdata.removed:
            new -= setdata.removed
        setdata |= new
        reverse.db_reverse_add(new, owner)
    _mark_loaded(attr, owners)


def _mark_loaded(attr: Attribute, owners: list[Any]) -> None:
    for obj in owners:
        setdata = obj._vals_.get(attr)
        if setdata is None:
            setdata = obj._vals_[attr] = _core.SetData()
        setdata.is_fully_loaded = True
        setdata.absent = None
        setdata.count = len(setdata)


def load_lazy(attr: Attribute, objects: list[Any]) -> None:
    """Load the lazy column ``attr`` of ``objects`` in one query per chunk of primary keys."""
    entity = attr.entity
    db = entity._database_
    q = db.provider.quote_name
    root = entity._root_
    pk_columns = list(root._pk_columns_)
    select_list = ", ".join(f"{q('t')}.{q(c)}" for c in [*pk_columns, *attr.columns])
    cache = db._get_cache()
    index = cache.indexes[root._pk_attrs_]
    for chunk in _chunks(db, objects, len(pk_columns)):
        sql = (
            f"SELECT {select_list} FROM {q(root._table_)} {q('t')} "
            f"WHERE {_in_condition(db, 't', pk_columns, len(chunk))}"
        )
        args = tuple(v for key in _raw_keys(chunk) for v in key)
        n = len(pk_columns)
        for row in db._exec_sql(sql, args).fetchall():
            pk_vals = [
                a.validate(v, None, root, from_db=True) for a, v in zip(root._pk_attrs_, row[:n], strict=True)
            ]
            obj = index.get(pk_vals[0] if n == 1 else tuple(pk_vals))
            if obj is not None and attr not in obj._vals_:
                obj._db_set_({attr: attr.validate(row[n], None, entity, from_db=True)})


# ---------------------------------------------------------------------------------------------------------
# Cache (ponykit.query.cache): stable query keys, rebuilding entities from rows or keys


# ---------------------------------------------------------------------------------------------------------
# Serialization (ponykit.serialization): attribute listing, raw rows of a query
