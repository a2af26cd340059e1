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
    keys: tuple[tuple[str, ...], ...]  # unique keys, simple and composite, by attribute name
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


def encode_value(attr: Attribute, value: Any) -> tuple[Any, ...]:
    """The column values Pony would bind when ``value`` is assigned to ``attr``.

    Runs the attribute's own validation (``validate`` of the converter, ``py_check``, min/max/max_len,
    required checks) and then ``val2dbval`` and ``py2sql``, exactly as an INSERT through an entity would.
    Relations accept an entity instance or its primary key and give the target's primary-key columns.
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


# ---------------------------------------------------------------------------------------------------------
# Cache (ponykit.query.cache): stable query keys, rebuilding entities from rows or keys


# ---------------------------------------------------------------------------------------------------------
# Serialization (ponykit.serialization): attribute listing, raw rows of a query


def entity_attributes(entity: Entity) -> tuple[Attribute, ...]:
    """Every attribute of ``entity`` (inherited ones included) in declaration order, as Pony lists them."""
    return tuple(entity._attrs_)


def entity_pk_attributes(entity: Entity) -> tuple[Attribute, ...]:
    """The primary-key attributes of ``entity``."""
    return tuple(entity._pk_attrs_)


def raw_pk_leaf_attributes(entity: Entity) -> tuple[Attribute, ...]:
    """The attributes whose values make up ``_get_raw_pkval_()`` of an instance, one per pk column.

    A primary key that includes a relation is flattened into the related entity's own key attributes,
    the way Pony flattens it into columns.
    """
    leaves: list[Attribute] = []
    for attr in entity._pk_attrs_:
        if attr.reverse is not None and not attr.is_collection:
            leaves.extend(raw_pk_leaf_attributes(attr.py_type))
        else:
            leaves.append(attr)
    return tuple(leaves)


def has_subclasses(entity: Entity) -> bool:
    """True if other entities inherit from ``entity`` (its queries may return subclass instances)."""
    return bool(entity._subclasses_)


def discriminator_value(entity: Entity) -> Any:
    """The discriminator code Pony stores for ``entity``'s rows, or None without inheritance."""
    return entity._discriminator_ if entity._discriminator_attr_ is not None else None


def flush_if_dirty(obj: Any) -> None:
    """Flush the object's session when it holds unsaved changes, as Pony's own ``to_dict`` does.

    New objects get their primary keys this way, so relations to them serialize as keys.
    """
    cache = obj._session_cache_
    if cache is not None and cache.is_alive and cache.modified:
        cache.flush()


def decimal_quantum(attr: Attribute) -> Any:
    """The ``Decimal`` exponent Pony quantizes ``attr``'s values to (``Decimal('0.01')`` for scale 2)."""
    converter = attr.converters[0] if attr.converters else None
    exp = getattr(converter, "exp", None)
    if exp is None and converter is not None and getattr(converter, "scale", None) is not None:
        from decimal import Decimal

        exp = Decimal(10) ** -converter.scale
    return exp


def untracked(value: Any) -> Any:
    """A plain copy of a ``Json`` attribute value (Pony wraps them in change-tracking dict/list types)."""
    get = getattr(value, "get_untracked", None)
    return get() if get is not None else value


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


def query_entity_rows(
    query: Any, lazy_attrs: tuple[Attribute, ...], limit: int | None, offset: int | None
) -> tuple[list[Any], dict[Any, list[int]]]:
    """Run the query's own SELECT and return ``(raw rows, {attribute: [column offsets]})``.

    The SQL is exactly the one Pony would run to load the entities (same filters, order, distinct,
    limit and offset), with ``lazy_attrs`` joined into the select list as ``prefetch`` does, but rows
    are returned as the driver produced them: no objects are built and the identity map is untouched.
    Pending changes of the session are flushed first, as before any query.
    """
    if lazy_attrs:
        query = query.prefetch(*lazy_attrs)
    with query._prefetch_context:
        sql, arguments, attr_offsets, _key = query._construct_sql_and_arguments(limit, offset)
    cursor = query._database._exec_sql(sql, arguments)
    return cursor.fetchall(), attr_offsets


def validate_attribute(attr: Attribute, value: Any) -> Any:
    """Validate ``value`` for ``attr`` with Pony's own checks: converter ``validate``, ``py_check``,
    min/max/max_len, required and nullability. Returns the value Pony would store; raises Pony's
    ``ValueError``/``TypeError`` otherwise. Relations take an instance or a raw primary key.
    """
    return attr.validate(value, None, attr.entity)


def find_by_raw_pk(entity: Entity, raw: tuple[Any, ...]) -> Any:
    """The instance of ``entity`` with this raw primary key (a tuple of column values), or None.

    Looks in the identity map first, then runs one SELECT. A key of the wrong shape or type gives None.
    """
    from pony.orm.core import ObjectNotFound

    pk_attrs = entity._pk_attrs_
    if len(pk_attrs) == len(raw):
        try:
            return entity.get(**{a.name: v for a, v in zip(pk_attrs, raw, strict=True)})
        except (TypeError, ValueError):
            return None
    try:  # a key that includes a relation: Pony resolves flattened column values itself
        obj = entity._get_by_raw_pkval_(raw)
        obj._load_()
    except (ObjectNotFound, TypeError, ValueError):
        return None
    return obj


def raw_pk_of(obj: Any) -> tuple[Any, ...]:
    """Same as :func:`raw_primary_key`: the flat tuple of an instance's primary-key column values."""
    return tuple(obj._get_raw_pkval_())


def pony_repr(obj: Any) -> str:
    """Pony's own ``Entity.__repr__`` of an instance (``User[1]``)."""
    from pony.orm.core import Entity as PonyEntity

    return str(PonyEntity.__repr__(obj))


def loaded_values(obj: Any) -> dict[Any, Any] | None:
    """The object's loaded attribute values by attribute (Pony's ``_vals_``), or None for a deleted object.

    An attribute missing from the mapping is not loaded yet; read it with ``attr.__get__(obj)``, which
    loads it. Collections are stored in another form here: always read them through ``__get__``.
    """
    if obj._status_ in _core.del_statuses:
        return None
    return obj._vals_  # type: ignore[no-any-return]


def is_entity_instance(value: Any) -> bool:
    """True for an instance of any Pony entity."""
    return isinstance(value, _core.Entity)
