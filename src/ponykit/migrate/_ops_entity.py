"""Entity-level operations: add, drop and rename an entity, its discriminator, composite keys and indexes."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from ponykit.errors import MigrationError
from ponykit.migrate._ops_base import Mapping, Operation, attr_decl_spec, entity_of, owned
from ponykit.migrate._ops_hints import discriminator_change, entity_rename_facts, rename_facts, safe
from ponykit.migrate._render import literal

__all__ = [
    "AddCompositeIndex",
    "AddCompositeKey",
    "AddEntity",
    "DropCompositeIndex",
    "DropCompositeKey",
    "DropEntity",
    "RenameEntity",
    "SetDiscriminator",
    "SetTable",
]


def _attr_list(attrs: Any) -> tuple[dict[str, Any], ...]:
    """``[(name, decl), ...]`` or attr dicts -> snapshot attr dicts with their names."""
    result = []
    for item in attrs:
        if isinstance(item, dict):
            spec = attr_decl_spec(item)
            result.append({"name": item["name"], **spec})
        else:
            name, decl = item
            result.append({"name": name, **attr_decl_spec(decl)})
    return tuple(result)


def _lists(value: Any) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(names) for names in value)


def subclasses(snap: dict[str, Any], name: str) -> list[str]:
    """Entities whose bases include ``name``."""
    return sorted(n for n, e in snap["entities"].items() if name in e["bases"])


def inherited_pk(snap: dict[str, Any], bases: tuple[str, ...]) -> list[str]:
    """The primary key a subclass inherits from its bases."""
    for base in bases:
        return list(entity_of(snap, base, "a subclass's primary key")["primary_key"])
    return []


@dataclass(frozen=True, eq=True)
class _EntityDef(Operation):
    """An entity's whole definition (shared by AddEntity and DropEntity's reversal)."""

    name: str
    attrs: Any = None
    bases: tuple[str, ...] = ()
    table: str | None = None
    discriminator: str | None = None
    primary_key: tuple[str, ...] | None = None
    composite_keys: tuple[tuple[str, ...], ...] = ()
    composite_indexes: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if self.attrs is not None:
            object.__setattr__(self, "attrs", _attr_list(self.attrs))
        object.__setattr__(self, "bases", tuple(self.bases))
        if self.primary_key is not None:
            object.__setattr__(self, "primary_key", tuple(self.primary_key))
        object.__setattr__(self, "composite_keys", _lists(self.composite_keys))
        object.__setattr__(self, "composite_indexes", _lists(self.composite_indexes))

    def entity_dict(self, snap: dict[str, Any]) -> dict[str, Any]:
        """The snapshot entity this definition declares (``snap``: where its bases are)."""
        attrs = copy.deepcopy(list(self.attrs or ()))
        if self.primary_key is not None:
            pk = list(self.primary_key)
        elif self.bases:
            pk = inherited_pk(snap, self.bases)
        else:
            pk = [a["name"] for a in attrs if a["kind"] == "PrimaryKey"]
        return {
            "bases": list(self.bases),
            "table": self.table,
            "discriminator": self.discriminator,
            "primary_key": pk,
            "attrs": attrs,
            "composite_keys": [list(k) for k in self.composite_keys],
            "composite_indexes": [list(k) for k in self.composite_indexes],
        }

    def add_to(self, snap: dict[str, Any]) -> None:
        """Declare this entity in ``snap``."""
        if self.name in snap["entities"]:
            raise MigrationError(f"{self.describe()}: entity {self.name!r} already exists")
        for base in self.bases:
            entity_of(snap, base, self.describe())
        snap["entities"][self.name] = self.entity_dict(snap)

    def remove_from(self, snap: dict[str, Any]) -> None:
        """Remove this entity from ``snap`` (no subclass may remain)."""
        entity_of(snap, self.name, self.describe())
        children = subclasses(snap, self.name)
        if children:
            raise MigrationError(f"{self.describe()}: drop its subclasses first ({', '.join(children)})")
        del snap["entities"][self.name]

    def definition_source(self, src: Any, call: str) -> str:
        """``op.X("Name", attrs=[...], ...)`` as source (only the non-default arguments)."""
        parts = [literal(self.name)]
        if self.attrs is not None:
            items = "".join(f"        ({literal(a['name'])}, {src.decl(_no_name(a))}),\n" for a in self.attrs)
            parts.append("attrs=[\n" + items + "    ]")
        if self.bases:
            parts.append(f"bases={literal(list(self.bases))}")
        for key in ("table", "discriminator"):
            if getattr(self, key) is not None:
                parts.append(f"{key}={literal(getattr(self, key))}")
        if self.primary_key is not None:
            parts.append(f"primary_key={literal(self.primary_key)}")
        for key in ("composite_keys", "composite_indexes"):
            if getattr(self, key):
                parts.append(f"{key}={literal([list(k) for k in getattr(self, key)])}")
        if self.attrs is None:
            return f"{call}({', '.join(parts)})"
        return f"{call}(\n" + "".join(f"    {part},\n" for part in parts) + ")"


def _root(snap: dict[str, Any], name: str) -> str:
    entities = snap["entities"]
    while name in entities and entities[name]["bases"]:
        name = entities[name]["bases"][0]
    return name


def _no_name(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != "name"}


def definition_of(snap: dict[str, Any], name: str) -> dict[str, Any]:
    """The keyword arguments of AddEntity/DropEntity that declare entity ``name`` of ``snap``."""
    entity = entity_of(snap, name, "an entity definition")
    own_pk = [a["name"] for a in entity["attrs"] if a["kind"] == "PrimaryKey"]
    derived = inherited_pk(snap, tuple(entity["bases"])) if entity["bases"] else own_pk
    return {
        "attrs": [dict(a) for a in entity["attrs"]],
        "bases": tuple(entity["bases"]),
        "table": entity["table"],
        "discriminator": entity["discriminator"],
        "primary_key": None if entity["primary_key"] == derived else tuple(entity["primary_key"]),
        "composite_keys": entity["composite_keys"],
        "composite_indexes": entity["composite_indexes"],
    }


@dataclass(frozen=True, eq=True)
class AddEntity(_EntityDef):
    """Declare a new entity: ``AddEntity("Pet", attrs=[("id", PrimaryKey(int, auto=True)), ...])``."""

    def _forwards(self, snap: dict[str, Any]) -> None:
        self.add_to(snap)

    def _backwards(self, snap: dict[str, Any]) -> None:
        self.remove_from(snap)

    def hints(self, before: Mapping, after: Mapping, hints: Any) -> None:
        # The first subclass of an existing root makes Pony add a NOT NULL discriminator column to the
        # root's table: the rows already there are of the root class.
        if not self.bases:
            return
        root = _root(getattr(after, "snapshot", {"entities": {}}), self.name)
        if safe(before.entity_table, root) is None or safe(before.discriminator, root) is not None:
            return
        disc = safe(after.discriminator, root)
        if disc is not None:
            hints.backfills[(disc[0], disc[1])] = disc[2]

    def source(self, src: Any) -> str:
        return self.definition_source(src, "op.AddEntity")

    def describe(self) -> str:
        return f"add entity {self.name}"


@dataclass(frozen=True, eq=True)
class DropEntity(_EntityDef):
    """Drop an entity (its table, its rows, its m2m tables); reversible when it carries its definition."""

    @property
    def reversible(self) -> bool:  # type: ignore[override]
        """Only a drop that carries the dropped definition can be undone."""
        return self.attrs is not None

    def _forwards(self, snap: dict[str, Any]) -> None:
        self.remove_from(snap)

    def _backwards(self, snap: dict[str, Any]) -> None:
        self.add_to(snap)

    def hints(self, before: Mapping, after: Mapping, hints: Any) -> None:
        table = safe(before.entity_table, self.name)
        disc = safe(before.discriminator, self.name)
        own_table = table is not None and not self.bases
        if own_table:
            hints.dropped_tables.add(table)
        elif disc is not None:
            # a subclass lives in its root's table: delete its rows, drop its own columns, and the
            # discriminator column when it was the root's last subclass (Pony adds it only for a hierarchy)
            root = _root(getattr(before, "snapshot", {"entities": {}}), self.name)
            # keyed by the root table's name at the end of the migration (like column renames)
            root_table = safe(after.entity_table, root)
            if root_table is not None:  # else the whole table goes with its root
                table = root_table
                hints.discriminator_deletes.append((table, disc[1], disc[2]))
                if safe(after.discriminator, root) is None:
                    hints.dropped_columns.add((root_table, disc[1]))
        for spec in self.attrs or ():
            link = safe(before.link_table, self.name, spec["name"])
            if link is not None:
                hints.dropped_tables.add(link)
            if not own_table and table is not None:
                for column in safe(before.attr_columns, self.name, spec["name"]) or ():
                    hints.dropped_columns.add((table, column))

    def source(self, src: Any) -> str:
        return self.definition_source(src, "op.DropEntity")

    def describe(self) -> str:
        return f"drop entity {self.name}"


@dataclass(frozen=True, eq=True)
class RenameEntity(Operation):
    """Rename an entity; its table, m2m tables, link columns and discriminator value follow when derived."""

    old: str
    new: str

    def _forwards(self, snap: dict[str, Any]) -> None:
        _rename(snap, self.old, self.new, self.describe())

    def _backwards(self, snap: dict[str, Any]) -> None:
        _rename(snap, self.new, self.old, self.describe())

    def hints(self, before: Mapping, after: Mapping, hints: Any) -> None:
        entity_rename_facts(before, after, self.old, self.new, hints)

    def source(self, src: Any) -> str:
        return f"op.RenameEntity({literal(self.old)}, {literal(self.new)})"

    def describe(self) -> str:
        return f"rename entity {self.old} -> {self.new}"


def _rename(snap: dict[str, Any], old: str, new: str, what: str) -> None:
    entities = snap["entities"]
    entity_of(snap, old, what)
    if new in entities:
        raise MigrationError(f"{what}: entity {new!r} already exists")
    snap["entities"] = {new if n == old else n: e for n, e in entities.items()}
    for name, entity in list(snap["entities"].items()):
        if old not in entity["bases"] and all(a["type"] != f"entity:{old}" for a in entity["attrs"]):
            continue
        entity = owned(snap, name, what)
        entity["bases"] = [new if b == old else b for b in entity["bases"]]
        for spec in entity["attrs"]:
            if spec["type"] == f"entity:{old}":
                spec["type"] = f"entity:{new}"


@dataclass(frozen=True, eq=True)
class SetDiscriminator(Operation):
    """Change an entity's declared ``_discriminator_`` value (None: Pony's default, the class name)."""

    entity: str
    old: str | None
    new: str | None

    def _forwards(self, snap: dict[str, Any]) -> None:
        owned(snap, self.entity, self.describe())["discriminator"] = self.new

    def _backwards(self, snap: dict[str, Any]) -> None:
        owned(snap, self.entity, self.describe())["discriminator"] = self.old

    def hints(self, before: Mapping, after: Mapping, hints: Any) -> None:
        discriminator_change(before, after, self.entity, self.entity, hints)

    def source(self, src: Any) -> str:
        return f"op.SetDiscriminator({literal(self.entity)}, {literal(self.old)}, {literal(self.new)})"

    def describe(self) -> str:
        return f"set discriminator of {self.entity}: {self.old!r} -> {self.new!r}"


@dataclass(frozen=True, eq=True)
class SetTable(Operation):
    """Change an entity's declared ``_table_`` (None: Pony's default name); the table is renamed."""

    entity: str
    old: str | None
    new: str | None

    def _forwards(self, snap: dict[str, Any]) -> None:
        owned(snap, self.entity, self.describe())["table"] = self.new

    def _backwards(self, snap: dict[str, Any]) -> None:
        owned(snap, self.entity, self.describe())["table"] = self.old

    def hints(self, before: Mapping, after: Mapping, hints: Any) -> None:
        rename_facts(before, after, {}, hints)

    def source(self, src: Any) -> str:
        return f"op.SetTable({literal(self.entity)}, {literal(self.old)}, {literal(self.new)})"

    def describe(self) -> str:
        return f"set table of {self.entity}: {self.old!r} -> {self.new!r}"


@dataclass(frozen=True, eq=True)
class _Composite(Operation):
    entity: str
    attrs: tuple[str, ...] = field(default=())

    key = "composite_keys"
    verb = "add"
    label = "composite key"

    def __post_init__(self) -> None:
        object.__setattr__(self, "attrs", tuple(self.attrs))

    def _add(self, snap: dict[str, Any]) -> None:
        entity = owned(snap, self.entity, self.describe())
        if list(self.attrs) in entity[self.key]:
            raise MigrationError(f"{self.describe()}: already declared")
        entity[self.key].append(list(self.attrs))

    def _drop(self, snap: dict[str, Any]) -> None:
        entity = owned(snap, self.entity, self.describe())
        if list(self.attrs) not in entity[self.key]:
            raise MigrationError(f"{self.describe()}: not declared")
        entity[self.key].remove(list(self.attrs))

    def _forwards(self, snap: dict[str, Any]) -> None:
        (self._add if self.verb == "add" else self._drop)(snap)

    def _backwards(self, snap: dict[str, Any]) -> None:
        (self._drop if self.verb == "add" else self._add)(snap)

    def source(self, src: Any) -> str:
        return f"op.{type(self).__name__}({literal(self.entity)}, {literal(list(self.attrs))})"

    def describe(self) -> str:
        return f"{self.verb} {self.label} {self.entity}({', '.join(self.attrs)})"


@dataclass(frozen=True, eq=True)
class AddCompositeKey(_Composite):
    """Declare ``composite_key(a, b)`` on an entity (a UNIQUE index over the columns)."""


@dataclass(frozen=True, eq=True)
class DropCompositeKey(_Composite):
    """Remove a ``composite_key(...)`` declaration."""

    verb = "drop"


@dataclass(frozen=True, eq=True)
class AddCompositeIndex(_Composite):
    """Declare ``composite_index(a, b)`` on an entity."""

    key = "composite_indexes"
    label = "composite index"


@dataclass(frozen=True, eq=True)
class DropCompositeIndex(_Composite):
    """Remove a ``composite_index(...)`` declaration."""

    key = "composite_indexes"
    label = "composite index"
    verb = "drop"
