"""Savepoints: transaction-control statements on a session's connection, and the snapshot of a session that a
rollback to a savepoint puts back.

Pony has no savepoints: after a ``ROLLBACK TO SAVEPOINT`` its identity map still shows what the rolled-back
statements wrote (values, ``_dbvals_`` used by the optimistic checks, deleted objects gone from the indexes,
collections changed in place). ponykit takes a :class:`SessionSnapshot` right after flushing at the
savepoint, when the session and the database agree, and :func:`restore_session` puts it back after the
rollback: every object of the snapshot gets its status, values, database values, read/write bits and loaded
collections back, the cache's indexes, seeds and lock set are those of the snapshot, and pending changes
and the query-result cache are dropped. Objects that entered the session inside the block are either
objects created there (their rows are gone: they become unusable, like a deleted object) or rows loaded
there (re-read from the database as it is after the rollback).

The snapshot costs one copy of the session's per-object state (a few dicts per object) per savepoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pony.orm.core as _core
from pony.orm import Database

from ._typing import SessionCache
from .session import forget_objects, refresh_objects

__all__ = [
    "SessionSnapshot",
    "loaded_state",
    "restore_session",
    "savepoint_statement",
    "snapshot_session",
]

_CREATED = ("created", "cancelled")  # never reached the database: nothing to re-read


def savepoint_statement(db: Database, sql: str, *, flush: bool) -> None:
    """Run ``SAVEPOINT``/``RELEASE SAVEPOINT``/``ROLLBACK TO SAVEPOINT`` in the current session's transaction.

    The statement goes through Pony's ``db._exec_sql`` with ``start_transaction=True``: a real transaction
    is begun first (``BEGIN IMMEDIATE`` on SQLite, so a RELEASE never commits; PostgreSQL leaves the
    autocommit Pony uses for reads), and the provider's ``execute`` (ponykit's statement listeners, Pony's
    SQL log and statistics) sees it. With ``flush``, pending ORM changes are flushed first, as before any
    statement; without it they are not (a rollback must not write the changes it is about to undo).
    """
    cache = db._get_cache()
    if flush:
        db._exec_sql(sql, None, start_transaction=True)
        return
    with cache.flush_disabled():
        db._exec_sql(sql, None, start_transaction=True)


# Per object: (status, vals, dbvals, rbits, wbits, pkval, newid, sets), a tuple since a snapshot holds one
# per object of the session; sets: (the collection's own SetData, its members, is_fully_loaded, count,
# added, removed, absent) for each collection loaded.
_ObjectState = tuple[str, dict[Any, Any], "dict[Any, Any] | None", Any, Any, Any, Any, list[tuple[Any, ...]]]


@dataclass
class SessionSnapshot:
    """What a session cache held at a savepoint (opaque outside this module)."""

    cache: SessionCache
    objects: dict[Any, _ObjectState]
    indexes: dict[Any, dict[Any, Any]]
    seeds: dict[Any, set[Any]]
    for_update: set[Any]


def _copy_set(setdata: Any) -> tuple[Any, ...]:
    return (
        setdata,
        set(setdata),
        setdata.is_fully_loaded,
        setdata.count,
        None if setdata.added is None else set(setdata.added),
        None if setdata.removed is None else set(setdata.removed),
        None if setdata.absent is None else set(setdata.absent),
    )


def snapshot_session(db: Database) -> SessionSnapshot:
    """Copy the state of the current session for ``db``; call it right after a flush.

    Raises ``RuntimeError`` if changes are pending (a snapshot of unsaved changes would put them back
    after the database forgot them): a caller bug, since the caller flushes first.
    """
    cache = db._get_cache()
    if cache.modified:  # a ponykit bug: savepoint() flushes before taking the snapshot
        raise RuntimeError("ponykit: snapshot_session() needs a flushed session")
    objects: dict[Any, _ObjectState] = {}
    set_type = _core.SetData
    for obj in cache.objects:
        vals = obj._vals_
        sets = [_copy_set(v) for v in vals.values() if type(v) is set_type]
        dbvals = obj._dbvals_
        objects[obj] = (
            obj._status_,
            vals.copy(),
            None if dbvals is None else dbvals.copy(),
            obj._rbits_,
            obj._wbits_,
            obj._pkval_,
            obj._newid_,
            sets,
        )
    return SessionSnapshot(
        cache,
        objects,
        {key: dict(index) for key, index in cache.indexes.items()},
        {key: set(seeds) for key, seeds in cache.seeds.items()},
        set(cache.for_update),
    )


def restore_session(db: Database, snapshot: SessionSnapshot) -> None:
    """Put the session back as it was at ``snapshot``, after the database rolled back to that point.

    Objects of the snapshot show their values from then (created/modified/deleted since: undone, loaded
    collections as they were). Objects that entered the session since are re-read from the database:
    rows loaded since come back with what the database now holds; objects created since (their rows are
    gone) are dropped from the identity map and become unusable (``OperationWithDeletedObjectError``).
    Pending changes, the query-result cache and the max-id cache are dropped. Runs SELECTs only for
    objects that entered the session since the snapshot.
    """
    cache = snapshot.cache
    assert cache is db._get_cache()  # the caller checked the session is the one of the snapshot
    newcomers = [obj for obj in cache.objects if obj not in snapshot.objects]
    for obj, (status, saved_vals, dbvals, rbits, wbits, pkval, newid, sets) in snapshot.objects.items():
        obj._status_ = status
        vals = obj._vals_
        vals.clear()
        vals.update(saved_vals)
        obj._dbvals_ = None if dbvals is None else dbvals.copy()
        obj._rbits_ = rbits
        obj._wbits_ = wbits
        obj._pkval_ = pkval
        obj._newid_ = newid
        obj._save_pos_ = None
        obj._session_cache_ = cache
        for setdata, members, loaded, count, added, removed, absent in sets:
            setdata.clear()
            setdata.update(members)
            setdata.is_fully_loaded = loaded
            setdata.count = count
            setdata.added, setdata.removed, setdata.absent = added, removed, absent
    cache.objects.clear()
    cache.objects.update(snapshot.objects)
    cache.indexes.clear()
    cache.indexes.update({key: dict(index) for key, index in snapshot.indexes.items()})
    cache.seeds.clear()
    cache.seeds.update({key: set(seeds) for key, seeds in snapshot.seeds.items()})
    cache.for_update.clear()
    cache.for_update.update(snapshot.for_update)
    cache.objects_to_save[:] = ()
    cache.saved_objects = []
    # dict's own clear: ponykit's reporting mapping (session.track_collection_changes) would record
    # the undone link changes as writes
    dict.clear(cache.modified_collections)
    cache.modified = False
    cache.query_results.clear()
    cache.max_id_cache.clear()
    _revive(db, cache, newcomers)


def _revive(db: Database, cache: SessionCache, newcomers: list[Any]) -> None:
    """Turn objects that entered the session after the snapshot back into seeds and re-read them."""
    reread = []
    for obj in newcomers:
        if obj._status_ in _CREATED:
            obj._status_ = "cancelled"
            continue
        pk_attrs = obj._pk_attrs_
        pkval = obj._pkval_
        if pkval is None or cache.indexes[pk_attrs].setdefault(pkval, obj) is not obj:
            obj._status_ = "cancelled"
            continue
        pairs = zip(pk_attrs, pkval, strict=True) if obj._pk_is_composite_ else ((pk_attrs[0], pkval),)
        obj._status_ = "loaded"
        obj._vals_ = {}
        obj._dbvals_ = {}
        obj._rbits_ = obj._wbits_ = 0
        obj._save_pos_ = None
        obj._newid_ = None
        cache.objects.add(obj)
        cache.seeds[pk_attrs].add(obj)
        for attr, val in pairs:
            obj._vals_[attr] = val
        reread.append(obj)
    if not reread:
        return
    # Rows loaded inside the block exist again (or still); rows inserted inside it are gone: Pony's
    # batch load tells them apart, and refresh_objects forgets the objects whose row it does not find.
    try:
        refresh_objects(db, reread, None)
    except Exception:
        forget_objects(db, reread)
        raise
    for obj in reread:
        if obj._status_ not in _core.del_statuses:
            _link_key_relations(obj)


def _link_key_relations(obj: Any) -> None:
    """Put a re-read object into the loaded collections of the objects its key refers to.

    Pony does it when it makes a seed; here it waits until the row is known to exist (a row inserted in
    the block is gone and must not appear in a collection). Pony's own code for it would raise on a
    collection loaded in full, which cannot miss a row that existed at the snapshot unless another
    transaction inserted it since: then it is added.
    """
    for attr in obj._pk_attrs_:
        reverse = attr.reverse
        val = obj._vals_.get(attr)
        if not reverse or val is None:
            continue
        if reverse.is_collection:
            setdata = val._vals_.get(reverse)
            if setdata is None:
                setdata = val._vals_[reverse] = _core.SetData()
            if obj not in setdata:
                setdata.add(obj)
                setdata.count = None
        else:  # a one-to-one through the key: the other side loads it again on use
            val._vals_.pop(reverse, None)
            val._dbvals_.pop(reverse, None)


def loaded_state(db: Database) -> dict[tuple[str, Any], dict[str, Any]]:
    """What the current session shows for each live object, without loading anything (for tests).

    ``(entity name, primary key) -> {attribute name: value}`` for the attributes loaded in the session;
    a primary key is given as its column values (one value, or a tuple for a composite key), a related
    object as its primary key, a collection as ``(fully_loaded, frozenset of member primary keys)``.
    Objects created and not flushed yet (no primary key) are left out.
    """
    cache = db._get_cache()
    image: dict[tuple[str, Any], dict[str, Any]] = {}
    for obj in cache.objects:
        if obj._status_ in _core.del_statuses or obj._pkval_ is None:
            continue
        values: dict[str, Any] = {}
        for attr, val in obj._vals_.items():
            if attr.is_collection:
                if val is not None:
                    values[attr.name] = (bool(val.is_fully_loaded), frozenset(_raw_key(o) for o in val))
            elif isinstance(val, _core.Entity):
                values[attr.name] = _raw_key(val)
            else:
                values[attr.name] = val
        image[(type(obj).__name__, _raw_key(obj))] = values
    return image


def _raw_key(obj: Any) -> Any:
    raw = obj._get_raw_pkval_()
    return raw[0] if len(raw) == 1 else tuple(raw)
