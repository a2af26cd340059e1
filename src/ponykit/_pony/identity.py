"""Identity-map upkeep after raw writes: flushing, refreshing and forgetting cached objects."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pony.orm.core as _core
from pony.orm import Database

from ._typing import Attribute, Entity
from .database import max_params, session_cache

__all__ = [
    "bookkeeping_in_session",
    "cached_objects",
    "column_sql_types",
    "entity_query_sql",
    "flush_session",
    "forget_objects",
    "is_entity_class",
    "is_entity_instance",
    "is_query",
    "loaded_value_by_name",
    "query_results_clear",
    "refresh_objects",
    "reset_reverse_of",
    "run_before_insert",
    "server_version",
]


def flush_session(db: Database) -> None:
    """Flush pending ORM changes of the current session for ``db`` (Pony's autoflush before raw SQL)."""
    cache = db._get_cache()
    if cache.modified:
        cache.flush()


def bookkeeping_in_session(db: Database, sql: str) -> None:
    """Run a transaction-control statement (``SAVEPOINT``, ``ROLLBACK TO SAVEPOINT``, ``RELEASE``) on
    the current db_session's connection, in its transaction (started first, as for any statement).

    It goes to the driver's cursor directly: Pony's SQL log shows it (when debug is on), but neither
    Pony's statistics nor the provider's ``execute`` (ponykit's execute listeners, ``count_queries``)
    see it, as they do not see Pony's own ``BEGIN``/``COMMIT``. Nothing reconnects: a failure raises
    the driver's error.
    """
    cache = db._get_cache()
    cache.immediate = True
    connection = cache.prepare_connection_for_query_execution()
    if _core.local.debug:
        _core.log_orm(sql)
    connection.cursor().execute(sql)
    cache.in_transaction = True


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
    if isinstance(version, int):  # psycopg2 reports 150019 for 15.19 (and 90605 for 9.6.5)
        return (version // 10000, version // 100 % 100, version % 100)
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
