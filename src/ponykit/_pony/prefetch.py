"""Prefetch (ponykit.query.prefetch): loading relations of many objects and filling the session cache."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pony.orm.core as _core
from pony.orm import Database
from pony.orm.dbapiprovider import Converter, IntConverter

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


Builder = Callable[[list[Any], Any], list[Any]]
_MAX_BUILDERS = 64  # per entity: one per column layout (query shape); more means shapes are generated


def materialize(entity: Entity, rows: list[Any], offsets: dict[Any, list[int]]) -> list[Any]:
    """Turn rows of ``entity``'s columns (laid out as ``offsets`` says) into session objects.

    Objects already in the identity map are refreshed through Pony's ``_db_set_`` (which detects
    unrepeatable reads and keeps local edits); new ones are built directly with the same state Pony
    would give them (values converted by each column's converter, reverse relations updated) by a
    function generated once per entity and column layout, which is several times faster than
    Pony's generic row parser.
    """
    cache = entity._database_._get_cache()
    if not rows:
        return []
    layout = tuple((attr, tuple(offs)) for attr, offs in offsets.items())
    builders: dict[Any, Builder] | None = entity.__dict__.get("_ponykit_builders_")
    if builders is None:
        builders = {}
        entity._ponykit_builders_ = builders
    build = builders.get(layout)
    if build is None:
        if len(builders) >= _MAX_BUILDERS:
            builders.clear()
        build = builders[layout] = _generate(entity, layout)
    return build(rows, cache)


def _refresher(entity: Entity, offsets: dict[Any, list[int]]) -> Callable[[Any], Any]:
    # Pony's own path for a row: parse, find or create the object, _db_set_ (None for deleted ones).
    deleted = _core.del_statuses

    def refresh(row: Any) -> Any:
        real, pkval, avdict = entity._parse_row_(row, offsets)
        obj = real._get_from_identity_map_(pkval, "loaded")
        if obj._status_ in deleted:
            return None
        obj._db_set_(avdict)
        return obj

    return refresh


def is_identity(method: Any, base: Any) -> bool:
    """True if ``method`` is ``base`` bound to an object (a converter step that was not overridden)."""
    return getattr(method, "__func__", None) is base


def _generate(entity: Entity, layout: tuple[tuple[Any, tuple[int, ...]], ...]) -> Builder:
    """Generate ``build(rows, cache) -> objects`` for rows of ``entity`` laid out as ``layout``."""
    offsets = {attr: list(offs) for attr, offs in layout}
    ns: dict[str, Any] = {
        "E": entity,
        "PK": entity._pk_attrs_,
        "new": object.__new__,
        "refresh": _refresher(entity, offsets),
        "NOT_LOADED": _core.NOT_LOADED,
    }
    if not _fast_path_ok(entity):
        source = "def build(rows, cache):\n    return [o for o in map(refresh, rows) if o is not None]\n"
        exec(source, ns)  # noqa: S102 - fixed text
        return ns["build"]  # type: ignore[no-any-return]
    lines: list[str] = []
    body = lines.append

    def fetch(name: str, attr: Any, offset: int, guard: bool) -> str:
        # The dbval of one column: Attribute.validate(from_db=True), i.e. sql2py unless NULL.
        sql2py = attr.converters[0].sql2py
        if is_identity(sql2py, Converter.sql2py):
            body(f"        {name} = r[{offset}]")
            return name
        if is_identity(sql2py, IntConverter.sql2py):
            call = "int"
        else:
            call = f"s_{name}"
            ns[call] = sql2py
        if guard:
            body(f"        {name} = r[{offset}]")
            body(f"        if {name} is not None: {name} = {call}({name})")
        else:
            body(f"        {name} = {call}(r[{offset}])")
        return name

    pk_attrs = entity._pk_attrs_
    if len(pk_attrs) == 1:
        pk_names = [fetch("pk", pk_attrs[0], offsets[pk_attrs[0]][0], guard=False)]
    else:
        pk_names = [fetch(f"k{i}", a, offsets[a][0], guard=False) for i, a in enumerate(pk_attrs)]
        body("        pk = (" + ", ".join(pk_names) + ",)")
    head = [
        "        obj = index_get(pk)",
        "        if obj is not None:",
        "            obj = refresh(r)",
        "            if obj is not None:",
        "                append(obj)",
        "            continue",
    ]
    pk_lines = lines[:]
    lines.clear()
    dbvals: list[str] = []
    vals = [f"PK[{i}]: {n}" for i, n in enumerate(pk_names)]
    reverse_lines: list[str] = []
    setup: list[str] = []
    for j, (attr, offs) in enumerate(layout):
        if attr.pk_offset is not None:
            continue
        ns[f"A{j}"] = attr
        if attr.reverse is not None:
            name = f"t{j}"
            key = f"r[{offs[0]}]" if len(offs) == 1 else "(" + ", ".join(f"r[{o}]" for o in offs) + ",)"
            ns[f"get{j}"] = attr.py_type._get_by_raw_pkval_
            setup.append(f"    known{j} = {{}}")
            body(f"        key = {key}")
            body(f"        if {'key' if len(offs) == 1 else 'key[0]'} is None:")
            body(f"            {name} = None")
            body("        else:")
            body(f"            {name} = known{j}.get(key)")
            body(f"            if {name} is None:")
            raw = "(key,)" if len(offs) == 1 else "key"
            body(f"                {name} = known{j}[key] = get{j}({raw})")
            dbvals.append(f"A{j}: {name}")
            vals.append(f"A{j}: {name}")
            ns[f"upd{j}"] = attr.db_update_reverse
            reverse = attr.reverse
            reverse_lines.append(f"        if {name} is not None:")
            if reverse.is_collection and isinstance(reverse, _core.Set):
                # Pony's db_reverse_add, inlined for the common case of a collection being loaded.
                ns[f"R{j}"] = reverse
                reverse_lines.append(f"            s = {name}._vals_.get(R{j})")
                reverse_lines.append("            if s is not None and not s.is_fully_loaded:")
                reverse_lines.append("                s.add(obj)")
                reverse_lines.append("            else:")
                reverse_lines.append(f"                upd{j}(obj, NOT_LOADED, {name})")
            else:
                reverse_lines.append(f"            upd{j}(obj, NOT_LOADED, {name})")
        else:
            name = fetch(f"d{j}", attr, offs[0], guard=True)
            dbvals.append(f"A{j}: {name}")
            conv = attr.converters[0]
            if is_identity(conv.dbval2val, Converter.dbval2val):
                vals.append(f"A{j}: {name}")
            else:
                ns[f"v{j}"] = conv.dbval2val
                vals.append(f"A{j}: None if {name} is None else v{j}({name}, obj)")
    column_lines = lines[:]
    source = "\n".join(
        [
            "def build(rows, cache):",
            "    index = cache.indexes[PK]",
            "    index_get = index.get",
            "    objects_add = cache.objects.add",
            "    result = []",
            "    append = result.append",
            *setup,
            "    for r in rows:",
            *pk_lines,
            *head,
            "        obj = new(E)",
            "        objects_add(obj)",
            "        obj._pkval_ = pk",
            '        obj._status_ = "loaded"',
            "        obj._save_pos_ = None",
            "        obj._session_cache_ = cache",
            "        obj._newid_ = None",
            "        obj._rbits_ = 0",
            "        obj._wbits_ = 0",
            "        index[pk] = obj",
            *column_lines,
            f"        obj._dbvals_ = {{{', '.join(dbvals)}}}",
            f"        obj._vals_ = {{{', '.join(vals)}}}",
            *reverse_lines,
            "        append(obj)",
            "    return result",
            "",
        ]
    )
    exec(source, ns)  # noqa: S102 - built from integer offsets and generated names only
    return ns["build"]  # type: ignore[no-any-return]


def load_by_pk(entity: Entity, objects: list[Any]) -> list[Any]:
    """Load the columns of ``objects`` (seeds of ``entity``) in one query per chunk of primary keys."""
    db = entity._database_
    root = entity._root_
    pk_columns = list(root._pk_columns_)
    loaded = []
    for chunk in _chunks(db, objects, len(pk_columns)):
        base, offsets = _select_sql(root, "t")
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
        base, offsets = _select_sql(child, "t")
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
