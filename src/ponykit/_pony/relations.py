"""Prefetch loaders: a relation or a lazy column loaded for many objects at once, in a few ``IN`` queries
instead of one query per object.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pony.orm.core as _core
from pony.orm import Database

from ._typing import Attribute, Entity
from .database import positional_placeholder
from .materialize import materialize, select_columns

__all__ = [
    "load_by_pk",
    "load_lazy",
    "load_many_to_many",
    "load_one_to_many",
]


def _placeholders(db: Database, count: int) -> list[str]:
    return [positional_placeholder(db)] * count


def _in_condition(db: Database, alias: str, columns: list[str], count: int) -> str:
    q = db.provider.quote_name
    if len(columns) == 1:
        return f"{q(alias)}.{q(columns[0])} IN ({', '.join(_placeholders(db, count))})"
    mark = _placeholders(db, 1)[0]
    one = " AND ".join(f"{q(alias)}.{q(c)} = {mark}" for c in columns)
    return "(" + " OR ".join(f"({one})" for _ in range(count)) + ")"


def _raw_keys(objects: list[Any]) -> list[Any]:
    """The primary-key column values of ``objects`` as bound in SQL, flattened."""
    if not objects:
        return []
    first = objects[0]
    pk_attrs = first._pk_attrs_
    if len(pk_attrs) == 1 and pk_attrs[0].reverse is None and all(o._pk_attrs_ is pk_attrs for o in objects):
        # One plain key column (what _get_raw_pkval_ gives as ``(pkval,)``): no relation to unwrap.
        py2sql = first._pk_converters_[0].py2sql
        return [py2sql(o._pkval_) for o in objects]
    result: list[Any] = []
    for obj in objects:
        converters = obj._pk_converters_
        raw = obj._get_raw_pkval_()
        result.extend(c.py2sql(v) for c, v in zip(converters, raw, strict=True))
    return result


def _chunks(db: Database, items: list[Any], width: int) -> Iterator[list[Any]]:
    size = max(1, int(db.provider.max_params_count) // max(width, 1))
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _select_sql(entity: Entity) -> tuple[str, dict[Any, list[int]]]:
    """``SELECT <entity columns> FROM <root table> t`` and the column offsets of each attribute."""
    db = entity._database_
    q = db.provider.quote_name
    columns, offsets = select_columns(entity)
    select_list = ", ".join(f"{q('t')}.{q(c)}" for c in columns)
    return f"SELECT {select_list} FROM {q(entity._root_._table_)} {q('t')}", offsets


def load_by_pk(entity: Entity, objects: list[Any]) -> list[Any]:
    """Load the columns of ``objects`` (seeds of ``entity``) in one query per chunk of primary keys."""
    db = entity._database_
    root = entity._root_
    pk_columns = list(root._pk_columns_)
    loaded = []
    for chunk in _chunks(db, objects, len(pk_columns)):
        base, offsets = _select_sql(root)
        sql = f"{base} WHERE {_in_condition(db, 't', pk_columns, len(chunk))}"
        args = tuple(_raw_keys(chunk))
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
        base, offsets = _select_sql(child)
        sql = f"{base} WHERE {_in_condition(db, 't', fk_columns, len(chunk))}"
        args = tuple(_raw_keys(chunk))
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
    columns, offsets = select_columns(target)
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
        args = tuple(_raw_keys(chunk))
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
        args = tuple(_raw_keys(chunk))
        n = len(pk_columns)
        for row in db._exec_sql(sql, args).fetchall():
            pk_vals = [
                a.validate(v, None, root, from_db=True) for a, v in zip(root._pk_attrs_, row[:n], strict=True)
            ]
            obj = index.get(pk_vals[0] if n == 1 else tuple(pk_vals))
            if obj is not None and attr not in obj._vals_:
                obj._db_set_({attr: attr.validate(row[n], None, entity, from_db=True)})
