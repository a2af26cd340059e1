"""Attribute-level operations: add, drop, rename and alter one attribute of an entity."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ponykit.errors import MigrationError
from ponykit.migrate._ops_base import MISSING, Mapping, Operation, attr_decl_spec, find_attr, owned
from ponykit.migrate._ops_hints import rename_facts, safe
from ponykit.migrate._render import literal

__all__ = [
    "AddAttr",
    "AlterAttr",
    "DropAttr",
    "RenameAttr",
    "empty_value",
    "implied_backfill",
    "needs_backfill",
]

_EMPTY: dict[str, Any] = {
    "str": "",
    "LongStr": "",
    "Json": {},
    "IntArray": [],
    "StrArray": [],
    "FloatArray": [],
}


def needs_backfill(spec: dict[str, Any]) -> bool:
    """Whether existing rows need a value for this new attribute (its column is NOT NULL, no SQL default).

    Pony makes Required, PrimaryKey and ``Optional`` of a type with an empty value (str, LongStr, Json,
    arrays) NOT NULL unless ``nullable=True`` or ``unique=True``; a Set has no column in its entity's table.
    """
    options = spec.get("options", {})
    if spec["kind"] in ("Set",) or options.get("sql_default") is not None:
        return False
    if spec["kind"] in ("Required", "PrimaryKey", "Discriminator"):
        return True
    # a unique Optional is NULL-able whatever its type (Pony: empty values would collide)
    return spec["type"] in _EMPTY and not options.get("nullable", False) and not options.get("unique")


def implied_backfill(spec: dict[str, Any]) -> Any:
    """The value Pony itself would give existing rows: a constant ``default=``, else the type's empty value
    for an Optional (Pony fills ``''``, ``{}``, ``[]``); MISSING when there is none."""
    options = spec.get("options", {})
    default = options.get("default", MISSING)
    if default is not MISSING and not (isinstance(default, dict) and "callable" in default):
        return default
    if needs_backfill(spec) and spec["kind"] == "Optional" and spec["type"] in _EMPTY:
        return _EMPTY[spec["type"]]
    return MISSING


def empty_value(spec: dict[str, Any]) -> Any:
    """What Pony stores for "no value" in a NOT NULL ``Optional`` of a type with an empty value (``''``,
    ``{}``, ``[]``): NULLs get it when such a column becomes NOT NULL (it loses ``unique``/``nullable``)."""
    if spec["kind"] == "Optional" and spec["type"] in _EMPTY and needs_backfill(spec):
        return _EMPTY[spec["type"]]
    return MISSING


def _table(view: Mapping, entity: str) -> str | None:
    result: str | None = safe(view.entity_table, entity)
    return result


def _insert(entity: dict[str, Any], spec: dict[str, Any], before: str | None, what: str) -> None:
    if find_attr(entity, spec["name"]) >= 0:
        raise MigrationError(f"{what}: attribute {spec['name']!r} already exists")
    if before is None:
        entity["attrs"].append(spec)
        return
    index = find_attr(entity, before)
    if index < 0:
        raise MigrationError(f"{what}: attribute {before!r} (before=) does not exist")
    entity["attrs"].insert(index, spec)


def _remove(snap: dict[str, Any], entity_name: str, name: str, what: str) -> dict[str, Any]:
    entity = owned(snap, entity_name, what)
    index = find_attr(entity, name)
    if index < 0:
        raise MigrationError(f"{what}: {entity_name}.{name} does not exist")
    if name in entity["primary_key"]:
        raise MigrationError(f"{what}: {entity_name}.{name} is part of the primary key")
    for key in ("composite_keys", "composite_indexes"):
        if any(name in names for names in entity[key]):
            raise MigrationError(f"{what}: {entity_name}.{name} is in a {key[:-1]}: drop that first")
    removed: dict[str, Any] = entity["attrs"].pop(index)
    return removed


def _before_source(before: str | None) -> str:
    return "" if before is None else f", before={literal(before)}"


@dataclass(frozen=True, eq=True)
class AddAttr(Operation):
    """Add an attribute: ``AddAttr("Person", "nick", Optional(str, 40), backfill="")``.

    ``backfill``: the value existing rows get (default: implied, see :func:`implied_backfill`);
    ``before``: the attribute it is declared before (default: last), so the declaration order is kept.
    A relation's two sides are two adjacent AddAttr operations.
    """

    entity: str
    name: str
    attr_decl: Any
    backfill: Any = MISSING
    before: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "attr_decl", attr_decl_spec(self.attr_decl))

    def _forwards(self, snap: dict[str, Any]) -> None:
        entity = owned(snap, self.entity, self.describe())
        _insert(entity, {"name": self.name, **copy.deepcopy(self.attr_decl)}, self.before, self.describe())

    def _backwards(self, snap: dict[str, Any]) -> None:
        _remove(snap, self.entity, self.name, f"undo {self.describe()}")

    def backfill_value(self) -> Any:
        """The explicit backfill, else the implied one (MISSING when none)."""
        return self.backfill if self.backfill is not MISSING else implied_backfill(self.attr_decl)

    def hints(self, before: Mapping, after: Mapping, hints: Any) -> None:
        value = self.backfill_value()
        if value is MISSING and self.attr_decl["kind"] == "Discriminator":
            # existing rows are of the entity the discriminator is declared on
            disc = safe(after.discriminator, self.entity)
            value = MISSING if disc is None else disc[2]
        table = _table(after, self.entity)
        # an explicit backfill is what existing rows get, NULL-able column or not; an implied one only
        # fills a NOT NULL column
        explicit = self.backfill is not MISSING
        if value is MISSING or table is None or not (explicit or needs_backfill(self.attr_decl)):
            return
        entities = getattr(after, "snapshot", {"entities": {}})["entities"]
        if self.backfill is MISSING and entities.get(self.entity, {}).get("bases"):
            # a subclass's columns are NULL-able in its root's table (rows of other classes have none):
            # only an explicit backfill is written
            return
        columns = safe(after.attr_columns, self.entity, self.name) or ()
        values = list(value) if len(columns) > 1 and isinstance(value, list | tuple) else [value]
        if len(columns) > 1 and len(values) != len(columns):
            raise MigrationError(
                f"{self.describe()}: the backfill {value!r} must give one value per column {columns}"
            )
        for column, item in zip(columns, values, strict=False):
            hints.backfills[(table, column)] = item

    def source(self, src: Any) -> str:
        extra = "" if self.backfill is MISSING else f", backfill={src.value(self.backfill)}"
        return (
            f"op.AddAttr({literal(self.entity)}, {literal(self.name)}, {src.decl(self.attr_decl)}"
            f"{extra}{_before_source(self.before)})"
        )

    def describe(self) -> str:
        return f"add attribute {self.entity}.{self.name}"


@dataclass(frozen=True, eq=True)
class DropAttr(Operation):
    """Drop an attribute and its column(s); reversible when ``spec`` (its declaration) is given."""

    entity: str
    name: str
    spec: Any = None
    before: str | None = None

    def __post_init__(self) -> None:
        if self.spec is not None:
            object.__setattr__(self, "spec", attr_decl_spec(self.spec))

    @property
    def reversible(self) -> bool:  # type: ignore[override]
        """Only a drop that carries the dropped declaration can be undone."""
        return self.spec is not None

    def _forwards(self, snap: dict[str, Any]) -> None:
        _remove(snap, self.entity, self.name, self.describe())

    def _backwards(self, snap: dict[str, Any]) -> None:
        entity = owned(snap, self.entity, f"undo {self.describe()}")
        _insert(
            entity, {"name": self.name, **copy.deepcopy(self.spec)}, self.before, f"undo {self.describe()}"
        )

    def hints(self, before: Mapping, after: Mapping, hints: Any) -> None:
        old_table = _table(before, self.entity)
        if old_table is None:
            return
        # keyed like column renames: the table's name at the end when it survives
        table = _table(after, self.entity) or old_table
        for column in safe(before.attr_columns, self.entity, self.name) or ():
            hints.dropped_columns.add((table, column))
        link = safe(before.link_table, self.entity, self.name)
        if link is not None:
            hints.dropped_tables.add(link)

    def source(self, src: Any) -> str:
        extra = "" if self.spec is None else f", spec={src.decl(self.spec)}"
        return (
            f"op.DropAttr({literal(self.entity)}, {literal(self.name)}{extra}{_before_source(self.before)})"
        )

    def describe(self) -> str:
        return f"drop attribute {self.entity}.{self.name}"


def _hierarchy(snap: dict[str, Any], name: str) -> list[str]:
    """``name`` and every entity below it."""
    result, todo = [], [name]
    while todo:
        current = todo.pop()
        result.append(current)
        todo += [n for n, e in snap["entities"].items() if current in e["bases"]]
    return result


def _ancestors(snap: dict[str, Any], name: str) -> list[str]:
    result, todo = [], [name]
    while todo:
        current = todo.pop()
        result.append(current)
        todo += snap["entities"][current]["bases"]
    return result


def _rename_attr(snap: dict[str, Any], entity_name: str, old: str, new: str, what: str) -> None:
    entity = owned(snap, entity_name, what)
    index = find_attr(entity, old)
    if index < 0:
        raise MigrationError(f"{what}: {entity_name}.{old} does not exist")
    if find_attr(entity, new) >= 0:
        raise MigrationError(f"{what}: {entity_name}.{new} already exists")
    entity["attrs"][index]["name"] = new
    for name in _hierarchy(snap, entity_name):
        below = owned(snap, name, what)
        below["primary_key"] = [new if n == old else n for n in below["primary_key"]]
        for key in ("composite_keys", "composite_indexes"):
            below[key] = [[new if n == old else n for n in names] for names in below[key]]
    # a relation's other side may name this attribute in reverse=
    targets = {f"entity:{n}" for n in _ancestors(snap, entity_name)}
    spec = entity["attrs"][index]
    other = spec["type"][len("entity:") :] if spec["type"].startswith("entity:") else None
    for name, candidate in list(snap["entities"].items()):
        if other is not None and name not in _hierarchy(snap, other):
            continue
        hits = [
            i
            for i, a in enumerate(candidate["attrs"])
            if a["type"] in targets and a["options"].get("reverse") == old
        ]
        if hits:
            candidate = owned(snap, name, what)
            for index in hits:
                candidate["attrs"][index]["options"]["reverse"] = new


@dataclass(frozen=True, eq=True)
class RenameAttr(Operation):
    """Rename an attribute; its columns, derived index names and m2m link columns follow."""

    entity: str
    old: str
    new: str

    def _forwards(self, snap: dict[str, Any]) -> None:
        _rename_attr(snap, self.entity, self.old, self.new, self.describe())

    def _backwards(self, snap: dict[str, Any]) -> None:
        _rename_attr(snap, self.entity, self.new, self.old, f"undo {self.describe()}")

    def hints(self, before: Mapping, after: Mapping, hints: Any) -> None:
        rename_facts(before, after, {f"{self.entity}.{self.new}": self.old}, hints)

    def source(self, src: Any) -> str:
        return f"op.RenameAttr({literal(self.entity)}, {literal(self.old)}, {literal(self.new)})"

    def describe(self) -> str:
        return f"rename attribute {self.entity}.{self.old} -> {self.new}"


@dataclass(frozen=True, eq=True)
class AlterAttr(Operation):
    """Change an attribute's declaration (kind, type, size, nullable, unique, index, column, ...).

    ``lossy=True`` says the change may lose data and was allowed (the planner adds a pre-check and a cast);
    ``backfill`` is the value NULLs get when an attribute becomes NOT NULL.
    """

    entity: str
    name: str
    old_decl: Any
    new_decl: Any
    lossy: bool = False
    backfill: Any = MISSING

    def __post_init__(self) -> None:
        object.__setattr__(self, "old_decl", attr_decl_spec(self.old_decl))
        object.__setattr__(self, "new_decl", attr_decl_spec(self.new_decl))

    def _swap(self, snap: dict[str, Any], have: dict[str, Any], want: dict[str, Any], what: str) -> None:
        entity = owned(snap, self.entity, what)
        index = find_attr(entity, self.name)
        if index < 0:
            raise MigrationError(f"{what}: {self.entity}.{self.name} does not exist")
        current = {k: v for k, v in entity["attrs"][index].items() if k != "name"}
        if current != have:
            raise MigrationError(f"{what}: {self.entity}.{self.name} is declared {current}, expected {have}")
        entity["attrs"][index] = {"name": self.name, **copy.deepcopy(want)}

    def _forwards(self, snap: dict[str, Any]) -> None:
        self._swap(snap, self.old_decl, self.new_decl, self.describe())

    def _backwards(self, snap: dict[str, Any]) -> None:
        self._swap(snap, self.new_decl, self.old_decl, f"undo {self.describe()}")

    def hints(self, before: Mapping, after: Mapping, hints: Any) -> None:
        # a changed column= or m2m table= keeps the data under a new name
        rename_facts(before, after, {}, hints)
        table = _table(after, self.entity)
        columns = safe(after.attr_columns, self.entity, self.name) or ()
        if table is None:
            return
        # a relation that changes shape (to-one <-> Set, one more key column) loses what does not map
        was = safe(before.attr_columns, self.entity, self.name) or ()
        if len(was) != len(columns):
            hints.dropped_columns |= {(table, column) for column in was if column not in columns}
        link = safe(before.link_table, self.entity, self.name)
        if link is not None and safe(after.link_table, self.entity, self.name) is None:
            hints.dropped_tables.add(link)
        value = self.backfill if self.backfill is not MISSING else empty_value(self.new_decl)
        for column in columns:
            if self.lossy:
                hints.lossy.add((table, column))
            if value is not MISSING:
                hints.backfills[(table, column)] = value

    def source(self, src: Any) -> str:
        extra = ", lossy=True" if self.lossy else ""
        extra += "" if self.backfill is MISSING else f", backfill={src.value(self.backfill)}"
        return (
            f"op.AlterAttr({literal(self.entity)}, {literal(self.name)}, {src.decl(self.old_decl)}, "
            f"{src.decl(self.new_decl)}{extra})"
        )

    def describe(self) -> str:
        return f"alter attribute {self.entity}.{self.name}" + (" (lossy)" if self.lossy else "")
