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
        sensitive = bool(
            getattr(converter, "sensitive", False)
            or getattr(attr.py_type, "sensitive", False)
            or "encrypt" in type(converter).__name__.lower()
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
    return db._exec_sql(sql, arguments, start_transaction=True)


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


def loaded_value(obj: Any, name: str) -> Any:
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


# ---------------------------------------------------------------------------------------------------------
# Cache (ponykit.query.cache): stable query keys, rebuilding entities from rows or keys


# ---------------------------------------------------------------------------------------------------------
# Serialization (ponykit.serialization): attribute listing, raw rows of a query
