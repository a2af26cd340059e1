"""Entity metadata, the values Pony binds and reads back, and write tracking."""

from __future__ import annotations

import os
import weakref
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pony.orm.core as _core
from pony.orm import Database

from ._typing import Attribute, Entity, SessionCache

__all__ = [
    "DEFAULT",
    "EntityInfo",
    "LinkRecorder",
    "LinkTable",
    "WriteRecorder",
    "builtin_decoder_name",
    "collection_attr_info",
    "column_converters",
    "column_value",
    "database_of",
    "decode_value",
    "encode_value",
    "entities_of",
    "entity_attribute",
    "entity_base",
    "entity_info",
    "entity_lineage",
    "find_attribute",
    "getpid",
    "install_write_hooks",
    "primary_key",
    "raw_primary_key",
    "root_entity",
    "track_collection_changes",
]


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


def column_value(attr: Attribute, value: Any) -> Any:
    """The column value Pony binds for ``value`` of a single-column, non-relation attribute.

    For values an object already holds in its session (Pony validated them when they were loaded or
    set), so they are not validated again: only ``val2dbval`` and ``py2sql`` run, as in
    :func:`encode_value`.
    """
    if value is None:
        return None
    converter = attr.converters[0]
    return converter.py2sql(converter.val2dbval(value, None))


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
