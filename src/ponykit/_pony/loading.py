"""Loading without Pony's query path: rebuilding session objects from rows kept in a cache, the raw rows
of a query, and reading what an object already has loaded.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pony.orm.core as _core

from ._typing import Attribute, Entity
from .database import converter_base

if TYPE_CHECKING:
    from .queries import QuerySQL

__all__ = [
    "collection_items",
    "entity_by_raw_pk",
    "entity_rows",
    "find_by_raw_pk",
    "is_deleted_or_new",
    "is_seed",
    "load_seeds",
    "loaded_value",
    "not_loaded",
    "query_entity_rows",
    "rebuild_entities",
]


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
