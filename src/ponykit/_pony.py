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
import sqlite3
import threading
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

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


def session_databases() -> list[Database]:
    """The Databases the current thread's session has touched so far."""
    return list(_core.local.db2cache)


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


def find_attribute(entity: Any, name: str) -> Attribute | None:
    """The attribute ``name`` of an entity class, or None (also when ``entity`` is not an entity)."""
    adict = getattr(entity, "_adict_", None)
    return None if adict is None else adict.get(name)


def root_entity(entity: Entity) -> Entity:
    """The root of an entity's class hierarchy (the entity itself when it has no base entity)."""
    return entity._root_


def entity_base() -> type:
    """Pony's ``Entity`` base class (whose own ``to_dict``/``to_json`` the Serializable mixin replaces)."""
    return _core.Entity  # type: ignore[no-any-return]


def builtin_decoder_name(converter: Any) -> str | None:
    """The name of the Pony class whose ``sql2py`` decodes for ``converter``, if decoding is Pony's own.

    None unless both ``sql2py`` and ``dbval2val`` come from Pony's modules and ``dbval2val`` is the
    base ``Converter``'s no-op: only then may a fast path skip what such a converter would do.
    """
    sql2py_owner = _method_owner(converter, "sql2py")
    dbval2val_owner = _method_owner(converter, "dbval2val")
    if not all(k.__module__.startswith("pony.") for k in (sql2py_owner, dbval2val_owner)):
        return None
    if dbval2val_owner.__name__ != "Converter":
        return None
    return sql2py_owner.__name__


def _method_owner(converter: Any, method: str) -> type:
    return next(k for k in type(converter).__mro__ if method in k.__dict__)


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

# Converter entries are replaced in place (not prepended) when ponykit wraps a dialect's own converter for a
# storage type: ``bool`` must keep matching before ``int`` and ``LongStr`` before nothing else.


def wrap_storage_converter(db: Database, storage: type, make: Callable[[type], type]) -> type:
    """Replace, on this provider instance, the converter entry that handles ``storage`` with ``make(cls)``.

    The entry keeps its position and its type key, so every type it matched before still goes to the new
    class. Idempotent: a class already made by ponykit is returned as is. Used for the converters Pony
    builds for query parameters (``get_converter_by_py_type``), which never see an attribute.
    """
    provider = db.provider
    entries = list(provider.converter_classes)
    for index, (key, cls) in enumerate(entries):
        if issubclass(storage, key):
            if getattr(cls, "_ponykit_param_converter_", False):
                return cls  # type: ignore[no-any-return]
            new_cls = make(cls)
            new_cls._ponykit_param_converter_ = True  # type: ignore[attr-defined]
            entries[index] = (key, new_cls)
            provider.converter_classes = entries
            return new_cls
    raise TypeError(f"the {provider.dialect} provider has no converter for {storage.__name__}")


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


# ---------------------------------------------------------------------------------------------------------
# Bulk writes (ponykit.bulk): executing batches in the session's transaction, identity-map upkeep

# Pony's marker for "no value given": Attribute.validate turns it into the attribute's default.
BULK_DEFAULT: Any = _core.DEFAULT

_SAFE_TYPES: frozenset[type] = (
    frozenset()
)  # filled below: exact types that can be neither entities nor proxies


def _init_safe_types() -> frozenset[type]:
    import datetime
    import decimal
    import uuid

    return frozenset(
        {
            str,
            int,
            float,
            bool,
            bytes,
            decimal.Decimal,
            datetime.date,
            datetime.datetime,
            datetime.time,
            datetime.timedelta,
            uuid.UUID,
        }
    )


_SAFE_TYPES = _init_safe_types()


@dataclass(frozen=True)
class BulkAttr:
    """How one attribute of an entity is written by a bulk statement."""

    name: str
    attr: Attribute
    columns: tuple[str, ...]
    is_pk: bool
    is_auto_pk: bool  # an auto-generated primary key: omitted from INSERT when no value is given
    has_sql_default: bool  # Pony omits the column (so the SQL DEFAULT applies) when the value is None
    is_relation: bool
    reverse_is_collection: bool
    is_discriminator: bool
    is_lazy: bool
    sensitive: bool  # never show values of this attribute in an error


def bulk_attrs(entity: Entity) -> tuple[BulkAttr, ...]:
    """The attributes of ``entity`` stored in its table, in column order, described for bulk writes."""
    disc = entity._discriminator_attr_
    result = []
    for attr in entity._attrs_with_columns_:
        converter = attr.converters[0] if attr.converters else None
        # Encrypted types mark themselves with __ponykit_sensitive__; their values stay out of errors.
        sensitive = bool(
            getattr(attr.py_type, "__ponykit_sensitive__", False)
            or getattr(converter, "__ponykit_sensitive__", False)
        )
        result.append(
            BulkAttr(
                name=attr.name,
                attr=attr,
                columns=tuple(attr.columns),
                is_pk=bool(attr.is_pk),
                is_auto_pk=bool(attr.is_pk and attr.auto),
                has_sql_default=attr.sql_default not in (None, False),
                is_relation=attr.reverse is not None,
                reverse_is_collection=bool(attr.reverse is not None and attr.reverse.is_collection),
                is_discriminator=attr is disc,
                is_lazy=bool(attr.lazy),
                sensitive=sensitive,
            )
        )
    return tuple(result)


def collection_attr_names(entity: Entity) -> frozenset[str]:
    """Names of the collection attributes (``Set``) of ``entity``: bulk writes do not take them."""
    return frozenset(a.name for a in entity._attrs_ if a.is_collection)


def attr_names_without_columns(entity: Entity) -> frozenset[str]:
    """Names of the non-collection attributes of ``entity`` that have no column (the reverse of a 1-1)."""
    return frozenset(a.name for a in entity._attrs_ if not a.is_collection and not a.columns)


def bulk_value_encoder(entity: Entity, attr: Attribute) -> Callable[[Any], Any]:
    """A function turning one given value (or ``BULK_DEFAULT``) into the column value(s) Pony would bind.

    Semantics are those of ``Entity(**kwargs)`` followed by the INSERT of ``_save_created_``: the value
    goes through ``attr.validate`` (defaults, callable defaults, ``Optional(str)`` as ``''``, required
    and nullable checks, the converter's ``validate`` with max_len/min/max, ``py_check``), then
    ``val2dbval`` and ``py2sql``. Relations accept an entity instance or its primary key (a scalar or a
    tuple) and give the related primary-key columns. Invalid values raise Pony's own ``TypeError`` or
    ``ValueError``. The result is a scalar for a one-column attribute and a tuple otherwise.

    For values of plain builtin types the attribute-level wrapper is skipped and its checks are made
    inline (the same checks, in the same order); converter steps Pony's base ``Converter`` leaves as
    the identity are not called. Anything unusual takes Pony's own path.
    """
    from pony.orm.dbapiprovider import Converter

    validate_attr = attr.validate
    if attr.reverse is not None:
        return _relation_encoder(entity, attr)
    converter = attr.converters[0]
    if attr is entity._discriminator_attr_:

        def encode_discriminator(value: Any) -> Any:
            val = validate_attr(value, None, entity)
            return converter.py2sql(converter.val2dbval(val, None))

        return encode_discriminator
    cvalidate = converter.validate
    conv_type = type(converter)
    val2dbval = None if conv_type.val2dbval is Converter.val2dbval else converter.val2dbval
    py2sql = None if conv_type.py2sql is Converter.py2sql else converter.py2sql
    py_check = attr.py_check
    required = isinstance(attr, _core.Required)
    safe = _SAFE_TYPES
    default_marker = _core.DEFAULT

    def finish(val: Any) -> Any:
        if val is None:
            return None
        if val2dbval is not None:
            val = val2dbval(val, None)
        if py2sql is not None:
            val = py2sql(val)
        return val

    # A constant default is encoded once (a callable one is called for every row, as Pony does).
    no_default = object()
    constant_default: Any = no_default
    if not callable(attr.default):
        try:
            constant_default = finish(validate_attr(default_marker, None, entity))
        except (TypeError, ValueError):
            constant_default = no_default

    def encode(value: Any) -> Any:
        if type(value) in safe:
            try:
                val = cvalidate(value, None)
            except UnicodeDecodeError:
                val = None  # Pony words this error itself: take its path below
            else:
                if val is not None and (py_check is None or py_check(val)) and not (required and val == ""):
                    return finish(val)
        elif value is default_marker and constant_default is not no_default:
            return constant_default
        return finish(validate_attr(value, None, entity))

    return encode


def bulk_encoder_source(
    entity: Entity, attr: Attribute, var: str, prefix: str
) -> tuple[list[str], dict[str, Any]]:
    """Python source lines that encode the value in variable ``var`` in place, and the names they use.

    The same semantics as :func:`bulk_value_encoder` (which the lines call for anything unusual and to
    raise Pony's own errors), inlined into ponykit's compiled row encoder: the per-value function calls
    are most of a bulk write's time. A check is inlined only where the converter's ``validate`` is
    Pony's own (not overridden by a subclass or a custom type), so what runs is the code Pony runs: for
    ``StrConverter`` the autostrip and ``max_len``, for ``IntConverter`` ``min``/``max``, for
    ``BoolConverter`` nothing for a ``bool``; other converters' ``validate`` is called directly. Then
    ``py_check``, the required-not-empty rule, ``val2dbval`` and ``py2sql`` (when not the identity).
    """
    from pony.orm.dbapiprovider import BoolConverter, Converter, IntConverter, StrConverter

    slow = f"{prefix}slow"
    env: dict[str, Any] = {slow: bulk_value_encoder(entity, attr)}
    if attr.reverse is not None or attr is entity._discriminator_attr_ or len(attr.converters) != 1:
        return [f"{var} = {slow}({var})"], env
    conv = attr.converters[0]
    ct = type(conv)
    required = isinstance(attr, _core.Required)
    orig = f"{prefix}orig"
    lines = [f"{orig} = {var}"]
    fail: list[str] = []  # conditions, on the validated value, that send the value down Pony's path
    if ct.validate is StrConverter.validate:
        lines.append(f"if type({var}) is str:")
        if conv.autostrip:
            lines.append(f"    {var} = {var}.strip()")
        if conv.max_len:
            fail.append(f"len({var}) > {int(conv.max_len)}")
        if required:
            fail.append(f"{var} == ''")
    elif ct.validate is IntConverter.validate:
        lines.append(f"if type({var}) is int:")
        if conv.min_val is not None:
            fail.append(f"{var} < {int(conv.min_val)}")
        if conv.max_val is not None:
            fail.append(f"{var} > {int(conv.max_val)}")
    elif ct.validate is BoolConverter.validate:
        lines.append(f"if type({var}) is bool:")
    else:
        env[f"{prefix}cv"] = conv.validate
        env[f"{prefix}safe"] = _SAFE_TYPES
        lines.append(f"if type({var}) in {prefix}safe:")
        lines.append(f"    {var} = {prefix}cv({var}, None)")
        fail.append(f"{var} is None")
        if required:
            fail.append(f"{var} == ''")
    if attr.py_check is not None:
        env[f"{prefix}check"] = attr.py_check
        fail.append(f"not {prefix}check({var})")
    finish = []
    if ct.val2dbval is not Converter.val2dbval:
        env[f"{prefix}v2d"] = conv.val2dbval
        finish.append(f"{var} = {prefix}v2d({var}, None)")
    if ct.py2sql is not Converter.py2sql:
        env[f"{prefix}p2s"] = conv.py2sql
        finish.append(f"{var} = {prefix}p2s({var})")
    if fail:
        lines.append(f"    if {' or '.join(fail)}:")
        lines.append(f"        {var} = {slow}({orig})")
        if finish:
            lines.append("    else:")
            lines.extend(f"        {line}" for line in finish)
    elif finish:
        lines.extend(f"    {line}" for line in finish)
    elif not lines[-1].startswith("    "):
        lines.append("    pass")
    if attr.nullable and not required:
        lines.append(f"elif {var} is None:")  # Attribute.validate passes None through for nullable attrs
        lines.append("    pass")
    lines.append("else:")
    lines.append(f"    {var} = {slow}({var})")
    return lines, env


def _relation_encoder(entity: Entity, attr: Attribute) -> Callable[[Any], Any]:
    rentity = attr.py_type
    converters = list(attr.converters)
    n = len(converters)
    validate_attr = attr.validate
    pk_parts: list[Attribute] | None = None
    if attr.py_check is None and all(a.reverse is None for a in rentity._pk_attrs_):
        pk_parts = list(rentity._pk_attrs_)

    def encode(value: Any) -> Any:
        if value is None or value is _core.DEFAULT or isinstance(value, _core.Entity) or pk_parts is None:
            val = validate_attr(value, None, entity)
            if val is None:
                return None if n == 1 else (None,) * n
            raw = val._get_raw_pkval_()
        else:
            # A primary key: validated like Pony's _get_by_raw_pkval_ does, without making a seed object.
            vals = value if type(value) is tuple else (value,)
            if len(vals) != n:
                raise TypeError(
                    f"Invalid number of columns were specified for attribute {attr}. "
                    f"Expected: {n}, got: {len(vals)}"
                )
            raw = tuple(_validate_pk_part(a, rentity, v) for a, v in zip(pk_parts, vals, strict=True))
        if n == 1:
            return converters[0].py2sql(raw[0])
        return tuple(c.py2sql(v) for c, v in zip(converters, raw, strict=True))

    return encode


def _validate_pk_part(pk_attr: Attribute, rentity: Entity, value: Any) -> Any:
    if isinstance(value, _core.Entity):
        raise TypeError(f"Attribute must be of {rentity.__name__} type. Got: {type(value).__name__} object")
    try:
        return pk_attr.validate(value, None, rentity, from_db=False)
    except TypeError:
        raise TypeError(
            f"a {rentity.__name__} object or its primary key is expected. Got: {type(value).__name__}"
        ) from None


def pk_is_plain(entity: Entity) -> bool:
    """True if the primary-key values Pony binds are the Python values (no relation, identity converters)."""
    from pony.orm.dbapiprovider import Converter

    for attr in entity._pk_attrs_:
        if attr.reverse is not None:
            return False
        conv = type(attr.converters[0])
        if getattr(conv, "_ponykit_param_converter_", False):
            # ponykit's query-parameter wrapper only encodes values of registered types; the key values
            # themselves pass through as the dialect's own converter would bind them.
            conv = conv.__mro__[1]
        if conv.py2sql is not Converter.py2sql or conv.val2dbval is not Converter.val2dbval:
            return False
    return True


def execute_in_session(db: Database, sql: str, arguments: Any) -> Any:
    """Run one statement in the current db_session's transaction through Pony's provider; the cursor.

    Goes through ``db._exec_sql`` with ``start_transaction=True``: pending ORM changes are flushed
    first, the transaction is started (``BEGIN IMMEDIATE`` on SQLite), and the provider's ``execute``
    (so ponykit's execute listeners, Pony's SQL log and statistics) sees the statement. A list of tuples
    runs as ``executemany``. The session commits or rolls back the statement with everything else.
    """
    _statement_state.self_reported += 1
    try:
        return db._exec_sql(sql, arguments, start_transaction=True)
    finally:
        _statement_state.self_reported -= 1


class _StatementState(threading.local):
    def __init__(self) -> None:
        self.self_reported = 0


_statement_state = _StatementState()


def in_self_reported_statement() -> bool:
    """True while :func:`execute_in_session` runs a statement whose writes the caller reports itself.

    Statement listeners that infer writes from SQL text skip these: the caller (a bulk operation)
    reports the exact keys it wrote with ``record_writes``.
    """
    return _statement_state.self_reported > 0


def flush_session(db: Database) -> None:
    """Flush pending ORM changes of the current session for ``db`` (Pony's autoflush before raw SQL)."""
    cache = db._get_cache()
    if cache.modified:
        cache.flush()


def cached_objects(db: Database, entity: Entity) -> list[Any]:
    """The live objects of ``entity`` (and its subclasses) in the current session's identity map."""
    cache = session_cache(db)
    if cache is None or not cache.is_alive:
        return []
    index = cache.indexes.get(entity._pk_attrs_)
    if not index:
        return []
    return [
        obj
        for obj in index.values()
        if isinstance(obj, entity) and obj._status_ not in ("deleted", "cancelled", "marked_to_delete")
    ]


def loaded_value_by_name(obj: Any, name: str) -> Any:
    """The Python value of attribute ``name`` in ``obj`` if loaded, else ``BULK_DEFAULT``."""
    attr = obj._adict_[name]
    return obj._vals_.get(attr, _core.DEFAULT)


def query_results_clear(db: Database) -> None:
    """Forget the query results cached in the current session (Pony's per-session result cache)."""
    cache = session_cache(db)
    if cache is not None and cache.is_alive:
        cache.query_results.clear()


def refresh_objects(db: Database, objects: list[Any], attr_names: frozenset[str] | None) -> None:
    """Make loaded objects show what the database now holds after a write behind Pony's back.

    The written attributes (``attr_names``, or all) stop counting as read in this transaction, so the
    re-read cannot raise ``UnrepeatableReadError``; the objects are then re-read with Pony's own batch
    load, which updates values, unique-key indexes and reverse relations. Lazy attributes are dropped
    and load again on access. An object whose row is gone is forgotten like a deleted one.
    """
    if not objects:
        return
    by_class: dict[Any, list[Any]] = defaultdict(list)
    for obj in objects:
        bits = obj._bits_except_volatile_
        lazy = []
        for attr in obj._attrs_with_columns_:
            if attr_names is not None and attr.name not in attr_names:
                continue
            if obj._rbits_ is not None:
                obj._rbits_ &= ~bits.get(attr, 0)
            if attr.lazy:
                lazy.append(attr)
        for attr in lazy:
            obj._vals_.pop(attr, None)
            obj._dbvals_.pop(attr, None)
        by_class[type(obj)].append(obj)
    limit = max_params(db)
    for cls, objs in by_class.items():
        step = max(1, limit // len(cls._pk_columns_))
        for start in range(0, len(objs), step):
            chunk = objs[start : start + step]
            sql, adapter, attr_offsets = cls._construct_batchload_sql_(len(chunk))
            cursor = db._exec_sql(sql, adapter(chunk))
            found = set(cls._fetch_objects(cursor, attr_offsets))
            gone = [o for o in chunk if o not in found]
            if gone:
                forget_objects(db, gone)


def forget_objects(db: Database, objects: list[Any]) -> None:
    """Remove objects whose rows were deleted behind Pony's back from the session.

    Afterwards ``Entity[pk]``, ``get`` and ``exists`` ask the database (and find nothing), the objects
    are marked deleted (using them raises ``OperationWithDeletedObjectError``), and collections of
    related objects that may have held them are reloaded on their next use.
    """
    cache = session_cache(db)
    if cache is None or not cache.is_alive:
        return
    indexes = cache.indexes
    for obj in objects:
        vals = obj._vals_
        pk_index = indexes.get(obj._pk_attrs_)
        if pk_index is not None and pk_index.get(obj._pkval_) is obj:
            del pk_index[obj._pkval_]
        for attr in obj._simple_keys_:
            val = vals.get(attr)
            index = indexes.get(attr)
            if val is not None and index is not None and index.get(val) is obj:
                del index[val]
        for attrs in obj._composite_keys_:
            key = tuple(vals.get(a) for a in attrs)
            index = indexes.get(attrs)
            if None not in key and index is not None and index.get(key) is obj:
                del index[key]
        cache.objects.discard(obj)
        cache.seeds[obj._pk_attrs_].discard(obj)
        cache.for_update.discard(obj)
        for attr in obj._attrs_:
            # The other end of a one-to-one pointing at the deleted object loads again on use.
            if attr.reverse is not None and not attr.is_collection and not attr.reverse.is_collection:
                robj = vals.get(attr)
                if robj is not None:
                    _reset_attr(robj, attr.reverse)
        obj._status_ = "deleted"
    # Loaded collections of other objects (one-to-many and many-to-many) must not hold deleted objects.
    gone = set(objects)
    for entity in {type(o) for o in objects}:
        for attr in entity._attrs_:
            reverse = attr.reverse
            if reverse is None or not reverse.is_collection:
                continue
            for robj in cached_objects(db, attr.py_type):
                setdata = robj._vals_.get(reverse)
                if setdata and not gone.isdisjoint(setdata):
                    setdata -= gone
                    setdata.count = None
    cache.query_results.clear()


def reset_reverse_of(db: Database, entity: Entity, attr_names: frozenset[str]) -> None:
    """After writing relation attributes of ``entity`` behind Pony's back, reload their reverse sides.

    For each named to-one relation, the reverse collection of every loaded related object is marked as
    not fully loaded (so new members are fetched on its next use), and the other end of a one-to-one is
    dropped and loads again on its next use.
    """
    for name in attr_names:
        attr = entity._adict_.get(name)
        if attr is None or attr.reverse is None or attr.is_collection:
            continue
        for robj in cached_objects(db, attr.py_type):
            _reset_attr(robj, attr.reverse)


def _reset_attr(obj: Any, attr: Attribute) -> None:
    if obj._status_ in ("deleted", "cancelled"):
        return
    if attr.is_collection:
        setdata = obj._vals_.get(attr)
        if setdata is not None:
            # Keep what is known to be there; Set.load fetches the rest on the next use.
            setdata.is_fully_loaded = False
            setdata.count = None
            setdata.absent = None
        return
    if attr not in obj._vals_:
        return
    obj._vals_.pop(attr, None)
    obj._dbvals_.pop(attr, None)
    if obj._rbits_ is not None:
        obj._rbits_ &= ~obj._bits_except_volatile_.get(attr, 0)


def column_sql_types(entity: Entity) -> dict[str, str]:
    """The SQL type Pony declared for each column of ``entity``'s table (for casts in VALUES lists)."""
    table = entity._database_.schema.tables[entity._table_]
    return {name: str(column.sql_type) for name, column in table.column_dict.items()}


def server_version(db: Database) -> tuple[int, ...]:
    """The database server version Pony detected at the first connection (e.g. ``(10, 11, 19)``)."""
    version = getattr(db.provider, "server_version", None)
    return tuple(version) if version else ()


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


def is_entity_instance(value: Any) -> bool:
    """True if ``value`` is an instance of some Pony entity."""
    return isinstance(value, _core.Entity)


def is_entity_class(value: Any) -> bool:
    """True if ``value`` is a Pony entity class."""
    return isinstance(value, _core.EntityMeta)


def run_before_insert(entity: Entity, row: dict[str, Any]) -> dict[str, Any]:
    """Run ``entity.before_insert`` on a transient object built from ``row``; the values it ends with.

    The object is created the normal Pony way (so the hook sees validated values and defaults), its
    ``before_insert`` runs, its attribute values are read back, and the object is then cancelled: Pony
    never inserts it and it leaves no trace in the identity map.
    """
    obj = entity(**row)
    try:
        obj.before_insert()
        result: dict[str, Any] = {}
        for attr in obj._attrs_with_columns_:
            if attr.is_pk and attr.auto and obj._vals_.get(attr) is None:
                continue
            if attr is entity._discriminator_attr_:
                continue
            if attr in obj._vals_:
                result[attr.name] = obj._vals_[attr]
        return result
    finally:
        obj._delete_()  # a created, unflushed object is cancelled without any SQL


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
    """The statement of ``query`` as Pony would build it; the first build of a shape needs a db_session."""
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


def connection_fingerprint(db: Database) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """``(dialect, connect args, connect kwargs)`` of the provider's pool, secrets removed.

    Passwords are dropped from keyword arguments and from URL-style DSNs; the result only feeds a
    one-way hash (a stable cache namespace), never a log line.
    """
    pool = db.provider.pool
    args = tuple(getattr(pool, "args", ()))
    kwargs = dict(getattr(pool, "kwargs", {}) or {})
    filename = getattr(pool, "filename", None)
    if filename is not None:
        args = (filename, *args)
    return dialect(db), args, kwargs


def mapping_signature(db: Database) -> tuple[Any, ...]:
    """The tables and columns of every entity of ``db``: part of a cache namespace, so a changed
    mapping never reads entries written under the old one."""
    return tuple(sorted((name, repr(e._table_), tuple(e._columns_)) for name, e in entities_of(db).items()))


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
    database = query._database
    if database.provider.dialect != "SQLite":
        return database._exec_sql(sql, arguments).fetchall(), attr_offsets
    # Pony decodes SQLite text with a Python function (utf-8, errors replaced); the C decoder gives the
    # same strings for valid UTF-8, much faster. Text that is not valid UTF-8 makes it raise: then the
    # SELECT runs again with Pony's own decoder.
    connection = database._get_cache().prepare_connection_for_query_execution()
    original = connection.text_factory
    connection.text_factory = str
    try:
        rows = database._exec_sql(sql, arguments).fetchall()
    except (_core.OperationalError, sqlite3.OperationalError) as exc:
        if "decode" not in str(exc).lower():
            raise
        connection.text_factory = original
        rows = database._exec_sql(sql, arguments).fetchall()
    finally:
        connection.text_factory = original
    return rows, attr_offsets


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


def values_for_output(obj: Any) -> dict[Any, Any] | None:
    """:func:`flush_if_dirty` then :func:`loaded_values`, in one call (the per-object serialization path)."""
    cache = obj._session_cache_
    if cache is not None and cache.is_alive and cache.modified:
        cache.flush()
    if obj._status_ in _core.del_statuses:
        return None
    return obj._vals_  # type: ignore[no-any-return]
