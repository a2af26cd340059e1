"""Prefetch (ponykit.query.prefetch): loading relations of many objects and filling the session cache."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pony.orm.core as _core
from pony.orm import Database

from ._typing import Attribute, Entity

__all__ = [
    "collection_items",
    "is_deleted_or_new",
    "is_seed",
    "load_by_pk",
    "load_lazy",
    "load_many_to_many",
    "load_one_to_many",
    "loaded_value",
    "materialize",
    "not_loaded",
    "relation_kind",
]


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
