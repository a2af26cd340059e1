"""The materializer: session objects from raw rows, as Pony's own fetch would leave them.

Pony turns each fetched row into an object through several calls per attribute. For one row layout
(which columns hold which attribute) a function is generated once per entity that does the same work in
one loop: a *plan* step decides, from the layout and the attributes' converters, what each column needs
(nothing, a converter call, a relation's object); an *emit* step writes the plan out as source, compiled
by :func:`ponykit._codegen.build_function`. Layouts the plan cannot handle take Pony's own path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pony.orm.core as _core
from pony.orm.dbapiprovider import Converter, IntConverter

from .._codegen import build_function
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


# The plan: what one row layout needs, decided once from the attributes' converters. Names are those the
# emitted code uses (``pk``/``k<i>`` for key columns, ``d<j>``/``t<j>`` for the attribute at layout slot j).
@dataclass(frozen=True)
class _Column:
    """One column read into ``name``: as is (``decode`` None), through ``int``, or the converter's sql2py."""

    name: str
    offset: int
    decode: Callable[[Any], Any] | None
    guard: bool  # NULL stays None instead of being decoded (key columns are never NULL)


@dataclass(frozen=True)
class _Value:
    """A column attribute at layout slot ``slot``: its dbval, and ``to_val`` (dbval2val) unless identity."""

    slot: int
    attr: Any
    column: _Column
    to_val: Callable[[Any, Any], Any] | None


@dataclass(frozen=True)
class _Reference:
    """A reference at layout slot ``slot``: the related object by raw key, and the reverse side to update."""

    slot: int
    attr: Any
    offsets: tuple[int, ...]
    get: Callable[[Any], Any]  # the related entity's _get_by_raw_pkval_
    update: Callable[..., Any]  # the attribute's db_update_reverse
    reverse_set: Any | None  # the reverse Set, when its add is inlined (the common case of loading one)


@dataclass(frozen=True)
class _Plan:
    entity: Any
    pk: tuple[_Column, ...]
    fields: tuple[_Value | _Reference, ...]


def _column(name: str, attr: Any, offset: int, guard: bool) -> _Column:
    # The dbval of one column: Attribute.validate(from_db=True), i.e. sql2py unless NULL.
    sql2py = attr.converters[0].sql2py
    if is_identity(sql2py, Converter.sql2py):
        return _Column(name, offset, None, guard)
    if is_identity(sql2py, IntConverter.sql2py):
        return _Column(name, offset, int, guard)
    return _Column(name, offset, sql2py, guard)


def _plan(entity: Entity, layout: tuple[tuple[Any, tuple[int, ...]], ...]) -> _Plan:
    """What building objects of ``entity`` from rows laid out as ``layout`` needs, column by column."""
    first = {attr: offs[0] for attr, offs in layout}
    pk_attrs = entity._pk_attrs_
    pk: tuple[_Column, ...]
    if len(pk_attrs) == 1:
        pk = (_column("pk", pk_attrs[0], first[pk_attrs[0]], guard=False),)
    else:
        pk = tuple(_column(f"k{i}", a, first[a], guard=False) for i, a in enumerate(pk_attrs))
    fields: list[_Value | _Reference] = []
    for j, (attr, offs) in enumerate(layout):
        if attr.pk_offset is not None:
            continue
        reverse = attr.reverse
        if reverse is not None:
            inline = reverse if reverse.is_collection and isinstance(reverse, _core.Set) else None
            fields.append(
                _Reference(j, attr, offs, attr.py_type._get_by_raw_pkval_, attr.db_update_reverse, inline)
            )
        else:
            to_val = attr.converters[0].dbval2val
            plain = is_identity(to_val, Converter.dbval2val)
            fields.append(
                _Value(j, attr, _column(f"d{j}", attr, offs[0], guard=True), None if plain else to_val)
            )
    return _Plan(entity, pk, tuple(fields))


def _read(column: _Column, ns: dict[str, Any]) -> list[str]:
    """The lines reading one column into ``column.name`` (inside the row loop)."""
    name, raw = column.name, f"r[{column.offset}]"
    if column.decode is None:
        return [f"        {name} = {raw}"]
    call = "int" if column.decode is int else f"s_{name}"
    if call != "int":
        ns[call] = column.decode
    if column.guard:
        return [f"        {name} = {raw}", f"        if {name} is not None: {name} = {call}({name})"]
    return [f"        {name} = {call}({raw})"]


def _reference_lines(ref: _Reference, ns: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """``(setup, reads, reverse updates)`` for one reference: related objects are looked up once per key."""
    j, offs, name = ref.slot, ref.offsets, f"t{ref.slot}"
    ns[f"get{j}"], ns[f"upd{j}"] = ref.get, ref.update
    key = f"r[{offs[0]}]" if len(offs) == 1 else "(" + ", ".join(f"r[{o}]" for o in offs) + ",)"
    reads = [
        f"        key = {key}",
        f"        if {'key' if len(offs) == 1 else 'key[0]'} is None:",
        f"            {name} = None",
        "        else:",
        f"            {name} = known{j}.get(key)",
        f"            if {name} is None:",
        f"                {name} = known{j}[key] = get{j}({'(key,)' if len(offs) == 1 else 'key'})",
    ]
    reverse = [f"        if {name} is not None:"]
    if ref.reverse_set is not None:
        # Pony's db_reverse_add, inlined for the common case of a collection being loaded.
        ns[f"R{j}"] = ref.reverse_set
        reverse += [
            f"            s = {name}._vals_.get(R{j})",
            "            if s is not None and not s.is_fully_loaded:",
            "                s.add(obj)",
            "            else:",
            f"                upd{j}(obj, NOT_LOADED, {name})",
        ]
    else:
        reverse.append(f"            upd{j}(obj, NOT_LOADED, {name})")
    return [f"    known{j} = {{}}"], reads, reverse


def _emit(plan: _Plan, ns: dict[str, Any]) -> list[str]:
    """The source of ``build(rows, cache)`` for ``plan``: the state Pony's own load would give new objects."""
    pk_lines = [line for column in plan.pk for line in _read(column, ns)]
    if len(plan.pk) > 1:
        pk_lines.append("        pk = (" + ", ".join(c.name for c in plan.pk) + ",)")
    setup: list[str] = []
    reads: list[str] = []
    reverse: list[str] = []
    dbvals: list[str] = []
    vals = [f"PK[{i}]: {c.name}" for i, c in enumerate(plan.pk)]
    for field in plan.fields:
        j = field.slot
        ns[f"A{j}"] = field.attr
        if isinstance(field, _Reference):
            more_setup, more_reads, more_reverse = _reference_lines(field, ns)
            setup += more_setup
            reads += more_reads
            reverse += more_reverse
            dbvals.append(f"A{j}: t{j}")
            vals.append(f"A{j}: t{j}")
            continue
        name = field.column.name
        reads += _read(field.column, ns)
        dbvals.append(f"A{j}: {name}")
        if field.to_val is None:
            vals.append(f"A{j}: {name}")
        else:
            ns[f"v{j}"] = field.to_val
            vals.append(f"A{j}: None if {name} is None else v{j}({name}, obj)")
    return [
        "def build(rows, cache):",
        "    index = cache.indexes[PK]",
        "    index_get = index.get",
        "    objects_add = cache.objects.add",
        "    result = []",
        "    append = result.append",
        *setup,
        "    for r in rows:",
        *pk_lines,
        "        obj = index_get(pk)",
        "        if obj is not None:",
        "            obj = refresh(r)",
        "            if obj is not None:",
        "                append(obj)",
        "            continue",
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
        *reads,
        f"        obj._dbvals_ = {{{', '.join(dbvals)}}}",
        f"        obj._vals_ = {{{', '.join(vals)}}}",
        *reverse,
        "        append(obj)",
        "    return result",
    ]


def _generate(entity: Entity, layout: tuple[tuple[Any, tuple[int, ...]], ...]) -> Builder:
    """``build(rows, cache) -> objects`` for rows of ``entity`` laid out as ``layout`` (plan, then emit)."""
    refresh = _refresher(entity, {attr: list(offs) for attr, offs in layout})
    if not _fast_path_ok(entity):

        def build(rows: list[Any], cache: Any) -> list[Any]:
            return [o for o in map(refresh, rows) if o is not None]

        return build
    ns: dict[str, Any] = {
        "E": entity,
        "PK": entity._pk_attrs_,
        "new": object.__new__,
        "refresh": refresh,
        "NOT_LOADED": _core.NOT_LOADED,
    }
    # Built from integer offsets and generated names only; Pony's objects reach it through ns.
    source = _emit(_plan(entity, layout), ns)
    return build_function("build", source, ns, label=f"pony.materialize {entity.__name__}")


def objects_from_rows(entity: Entity, rows: list[Any], attr_offsets: Any, used_attrs: Any) -> list[Any]:
    """Session objects for ``rows`` of ``entity``, marked as read where Pony's own fetch marks them."""
    objects = materialize(entity, rows, attr_offsets)
    if used_attrs and objects:
        # Pony marks the attributes a query filtered or sorted on as read (optimistic checks).
        entity._set_rbits(objects, used_attrs)
    return objects
