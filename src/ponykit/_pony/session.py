"""Pony's ``db_session``: the session cache, its depth, flushing, write tracking, and keeping the identity map
true after ponykit wrote rows behind Pony's back (bulk writes, raw statements).

Write tracking is installed on the entity classes of one ``Database``.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pony.orm.core as _core
from pony.orm import Database

from ._typing import Attribute, Entity, SessionCache
from .database import dialect, max_params
from .model import collection_attr_info, entity_lineage

__all__ = [
    "LinkRecorder",
    "WriteRecorder",
    "bookkeeping_in_session",
    "cached_objects",
    "connect_session",
    "connected_caches",
    "flush_if_dirty",
    "flush_session",
    "forget_objects",
    "in_db_session",
    "in_flush",
    "install_write_hooks",
    "is_alive",
    "is_in_transaction",
    "is_partial_commit",
    "loaded_value_by_name",
    "on_bookkeeping",
    "outside_session",
    "query_results_clear",
    "refresh_objects",
    "release_idle_caches",
    "require_session_cache",
    "reset_reverse_of",
    "run_before_insert",
    "session_cache",
    "session_databases",
    "session_depth",
    "session_objects",
    "snapshot_may_predate",
    "track_collection_changes",
    "unflushed_entities",
]


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


def is_partial_commit(exc: BaseException) -> bool:
    """True for Pony's ``PartialCommitException`` (one Database committed, a later one failed)."""
    return isinstance(exc, _core.PartialCommitException)


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
    cursor = connection.cursor()
    before = db.__dict__.get(_BOOKKEEPING_HOOK)
    if before is not None:
        before(cursor, sql)
    cursor.execute(sql)
    cache.in_transaction = True


_BOOKKEEPING_HOOK = "_ponykit_before_bookkeeping_"


def on_bookkeeping(db: Database, before: Callable[[Any, str], None]) -> None:
    """Call ``before(cursor, sql)`` ahead of each :func:`bookkeeping_in_session` statement on ``db``.

    Row-level security settings must be in place before a ``SAVEPOINT``: applied after one, a
    ``ROLLBACK TO`` it would undo them.
    """
    db.__dict__[_BOOKKEEPING_HOOK] = before


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
    """The Python value of attribute ``name`` in ``obj`` if loaded, else ``DEFAULT`` (Pony's "no value")."""
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


def flush_if_dirty(obj: Any) -> None:
    """Flush the object's session when it holds unsaved changes, as Pony's own ``to_dict`` does.

    New objects get their primary keys this way, so relations to them serialize as keys.
    """
    cache = obj._session_cache_
    if cache is not None and cache.is_alive and cache.modified:
        cache.flush()


def session_objects(db: Any) -> list[Any]:
    """Every live object in the current session's identity map, new unsaved ones included (objects
    without a key yet are in no index), so tests can check that nothing half-built was left behind."""
    cache = _core.local.db2cache.get(db)
    if cache is None or not cache.is_alive:
        return []
    return [o for o in cache.objects if o._status_ not in ("deleted", "cancelled", "marked_to_delete")]
