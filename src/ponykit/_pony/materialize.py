"""The materializer: session objects from raw rows, as Pony's own fetch would leave them.

Pony turns each fetched row into an object through several calls per attribute. For one row layout
(which columns hold which attribute) a function is generated once per entity that does the same work in
one loop: a *plan* step decides, from the layout and the attributes' converters, what each column needs
(nothing, a converter call, a relation's object); an *emit* step writes the plan out as source, compiled
by :func:`ponykit._codegen.build_function`. Layouts the plan cannot handle take Pony's own path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pony.orm.core as _core
from pony.orm.dbapiprovider import Converter, IntConverter

from ._typing import Entity
from .values import is_identity

__all__ = [
    "materialize",
]


def select_columns(entity: Entity) -> tuple[list[str], dict[Any, list[int]]]:
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


def objects_from_rows(entity: Entity, rows: list[Any], attr_offsets: Any, used_attrs: Any) -> list[Any]:
    """Session objects for ``rows`` of ``entity``, marked as read where Pony's own fetch marks them."""
    objects = materialize(entity, rows, attr_offsets)
    if used_attrs and objects:
        # Pony marks the attributes a query filtered or sorted on as read (optimistic checks).
        entity._set_rbits(objects, used_attrs)
    return objects
