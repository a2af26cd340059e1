"""The operations that lead from one snapshot to another (what ``make`` writes into a migration file).

Renames are never guessed: they come from ``renames`` (``{"Person": "Human", "Person.name": "full_name"}``);
:func:`suggest_renames` lists the drop/add pairs with equal declarations so the refusal can say "did you
mean --rename ...". The operations are ordered so that every intermediate snapshot is consistent: renames,
then drops (composite keys, relations, attributes, entities from the leaves up), then alterations, then
additions (entities from the root down, attributes, the two sides of a relation next to each other,
composite keys last).
"""

from __future__ import annotations

from typing import Any

from ponykit.errors import MigrationError, UnsafeMigration
from ponykit.migrate._lossy import becomes_not_null, lossy_reasons
from ponykit.migrate._ops_attr import (
    AddAttr,
    AlterAttr,
    DropAttr,
    RenameAttr,
    implied_backfill,
    needs_backfill,
)
from ponykit.migrate._ops_base import MISSING, Operation, find_attr
from ponykit.migrate._ops_entity import (
    AddCompositeIndex,
    AddCompositeKey,
    AddEntity,
    DropCompositeIndex,
    DropCompositeKey,
    DropEntity,
    RenameEntity,
    SetDiscriminator,
    SetTable,
    definition_of,
)

__all__ = ["autodetect", "suggest_renames"]

_COMPOSITES = (
    ("composite_keys", AddCompositeKey, DropCompositeKey),
    ("composite_indexes", AddCompositeIndex, DropCompositeIndex),
)


def _decl(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != "name"}


def _attrs(entity: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in entity["attrs"]}


def _depth(snap: dict[str, Any], name: str) -> int:
    bases = snap["entities"][name]["bases"]
    return 0 if not bases else 1 + max(_depth(snap, b) for b in bases)


def _entity_shape(snap: dict[str, Any], name: str) -> Any:
    """An entity's definition with its own name replaced, to compare a dropped and an added entity."""
    entity = snap["entities"][name]
    own = f"entity:{name}"
    attrs = [{**a, "type": "entity:<self>" if a["type"] == own else a["type"]} for a in entity["attrs"]]
    return {**entity, "attrs": attrs}


def suggest_renames(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``"Entity.old=new"`` / ``"Old=New"`` for each dropped and added thing with an equal declaration."""
    result = []
    gone = sorted(set(old["entities"]) - set(new["entities"]))
    came = sorted(set(new["entities"]) - set(old["entities"]))
    for was in gone:
        result += [f"{was}={now}" for now in came if _entity_shape(old, was) == _entity_shape(new, now)]
    for name in sorted(set(old["entities"]) & set(new["entities"])):
        before, after = _attrs(old["entities"][name]), _attrs(new["entities"][name])
        for was in (n for n in before if n not in after):
            result += [
                f"{name}.{was}={now}"
                for now in after
                if now not in before and _decl(after[now]) == _decl(before[was])
            ]
    return result


class _Builder:
    """Emits operations and keeps the snapshot they lead to."""

    def __init__(self, old: dict[str, Any], new: dict[str, Any], flags: dict[str, Any]) -> None:
        self.cur = old
        self.new = new
        self.old = old
        self.ops: list[Operation] = []
        self.flags = flags
        # entities created by this migration (their tables start empty: no backfill needed)
        self.added: set[str] = set()

    def emit(self, operation: Operation) -> None:
        self.cur = operation.forwards(self.cur)
        self.ops.append(operation)

    def refuse_drop(self, what: str) -> None:
        if self.flags["allow_drop"]:
            return
        hints = suggest_renames(self.cur, self.new)  # after the renames already given
        mentioned = [h for h in hints if h.split("=")[0] == what or h.startswith(f"{what}.")]
        hint = f" Did you mean {', '.join('--rename ' + h for h in mentioned)}?" if mentioned else ""
        raise UnsafeMigration(
            f"{what} is not in the models any more: dropping it loses its data; pass allow_drop=True "
            f"(--allow-drop) to drop it, or renames={{...}} (--rename) if it was renamed.{hint}"
        )


def _chain_order(renames: dict[str, str]) -> list[str]:
    """The keys in an order where no rename takes a name another one still has to leave (b -> c before
    a -> b); a cycle keeps its given order (the operation names the clash)."""
    pending, order = dict(renames), []
    while pending:
        ready = [k for k, v in pending.items() if v not in pending] or list(pending)[:1]
        for key in ready:
            order.append(key)
            del pending[key]
    return order


def _standalone(snap: dict[str, Any], name: str) -> bool:
    """Whether entity ``name`` has no relation, base or subclass: it can be dropped on its own."""
    entities = snap["entities"]
    related = any(a["type"].startswith("entity:") for a in entities[name]["attrs"])
    pointed = any(a["type"] == f"entity:{name}" for e in entities.values() for a in e["attrs"])
    family = bool(entities[name]["bases"]) or any(name in e["bases"] for e in entities.values())
    return not (related or pointed or family)


def _apply_renames(b: _Builder, renames: dict[str, str]) -> None:
    entity_renames = {k: v for k, v in renames.items() if "." not in k}
    for key in _chain_order(entity_renames):
        value = renames[key]
        if "." not in key:
            if value in b.cur["entities"] and value not in entity_renames and key in b.cur["entities"]:
                # renamed onto the name of an entity that goes: drop that one first (its name is taken)
                b.refuse_drop(value)
                if _standalone(b.cur, value):
                    b.emit(DropEntity(value, **definition_of(b.cur, value)))
            if key not in b.cur["entities"] or value not in b.new["entities"]:
                raise MigrationError(
                    f"rename {key}={value}: expected entity {key!r} in the snapshot "
                    f"and {value!r} in the models"
                )
            b.emit(RenameEntity(key, value))
    _drop_replaced(b, renames)
    attr_renames = {k: f"{k.split('.', 1)[0]}.{v}" for k, v in renames.items() if "." in k}
    for key in _chain_order(attr_renames):
        value = renames[key]
        if "." in key:
            entity, attr = key.split(".", 1)
            entity = renames.get(entity, entity)
            if entity not in b.cur["entities"] or find_attr(b.cur["entities"][entity], attr) < 0:
                raise MigrationError(f"rename {key}={value}: {entity}.{attr} is not in the snapshot")
            if entity not in b.new["entities"] or find_attr(b.new["entities"][entity], value) < 0:
                raise MigrationError(f"rename {key}={value}: {entity}.{value} is not in the models")
            b.emit(RenameAttr(entity, attr, value))


def _drop_replaced(b: _Builder, renames: dict[str, str]) -> None:
    """Drop, before the renames, an attribute that another one is renamed onto (``Person.nick`` ->
    ``name`` while the old ``name`` goes): the rename needs its name free."""
    moving: dict[str, dict[str, str]] = {}
    for key, value in renames.items():
        if "." in key:
            entity, attr = key.split(".", 1)
            moving.setdefault(renames.get(entity, entity), {})[attr] = value
    for entity, attrs in moving.items():
        current = b.cur["entities"].get(entity)
        if current is None:
            continue  # reported by the renames
        for value in attrs.values():
            index = find_attr(current, value)
            if index < 0 or value in attrs:
                continue  # free, or itself renamed away (a chain: ordered below)
            spec = current["attrs"][index]
            if spec["type"].startswith("entity:") or spec["kind"] == "PrimaryKey":
                continue  # a relation has a reverse side to drop with it: left to the usual order
            b.refuse_drop(f"{entity}.{value}")
            for key, _, drop in _COMPOSITES:
                for names in list(b.cur["entities"][entity][key]):
                    if value in names:
                        b.emit(drop(entity, names))
            b.emit(DropAttr(entity, value, spec=_decl(spec), before=_next(b.cur, entity, value)))
            current = b.cur["entities"][entity]


def _drops(b: _Builder) -> None:
    common = [n for n in b.cur["entities"] if n in b.new["entities"]]
    gone = [n for n in b.cur["entities"] if n not in b.new["entities"]]
    for name in gone:
        b.refuse_drop(name)
    for name in common:
        new_attrs = _attrs(b.new["entities"][name])
        for attr in (a["name"] for a in b.cur["entities"][name]["attrs"] if a["name"] not in new_attrs):
            b.refuse_drop(f"{name}.{attr}")
    # composite keys/indexes that go, or that name an attribute that goes or changes
    for name in list(b.cur["entities"]):
        entity = b.cur["entities"][name]
        target = b.new["entities"].get(name)
        for key, _, drop in _COMPOSITES:
            for names in list(entity[key]):
                if target is None or names not in target[key]:
                    b.emit(drop(name, names))
    # attributes of surviving entities (relations first: their other side may be in a dropped entity)
    for relations in (True, False):
        for name in common:
            new_attrs = _attrs(b.new["entities"][name])
            for spec in list(b.cur["entities"][name]["attrs"]):
                if spec["name"] in new_attrs or spec["type"].startswith("entity:") != relations:
                    continue
                b.emit(
                    DropAttr(name, spec["name"], spec=_decl(spec), before=_next(b.cur, name, spec["name"]))
                )
    for name in sorted(gone, key=lambda n: -_depth(b.cur, n)):
        b.emit(DropEntity(name, **definition_of(b.cur, name)))


def _next(snap: dict[str, Any], entity: str, attr: str) -> str | None:
    attrs = snap["entities"][entity]["attrs"]
    index = find_attr(snap["entities"][entity], attr)
    return attrs[index + 1]["name"] if index + 1 < len(attrs) else None


def _alters(b: _Builder) -> None:
    for name in list(b.cur["entities"]):
        entity, target = b.cur["entities"][name], b.new["entities"][name]
        if entity["bases"] != target["bases"]:
            raise MigrationError(
                f"{name}: its bases changed ({entity['bases']} -> {target['bases']}); moving an entity in a "
                "hierarchy is not an operation: add a new entity and move the data with op.RunPython"
            )
        if entity["table"] != target["table"]:
            b.emit(SetTable(name, entity["table"], target["table"]))
        if entity["discriminator"] != target["discriminator"]:
            b.emit(SetDiscriminator(name, entity["discriminator"], target["discriminator"]))
        new_attrs = _attrs(target)
        for spec in list(entity["attrs"]):
            want = new_attrs.get(spec["name"])
            if want is None or _decl(want) == _decl(spec):
                continue
            b.emit(_alter(b, name, spec, want))


def _alter(b: _Builder, name: str, spec: dict[str, Any], want: dict[str, Any]) -> AlterAttr:
    where = f"{name}.{spec['name']}"
    reasons = lossy_reasons(spec, want)
    if reasons and not b.flags["allow_lossy"]:
        raise UnsafeMigration(
            f"{where}: the change may lose data ({'; '.join(reasons)}); "
            "pass allow_lossy=True (--allow-lossy) to allow it (a pre-check refuses rows that do not fit)"
        )
    backfill = b.flags["backfill"].get(where, MISSING)
    if becomes_not_null(spec, want) and backfill is MISSING and not b.cur["entities"][name]["bases"]:
        backfill = implied_backfill(_decl(want))
        if backfill is MISSING and not b.flags["allow_lossy"]:
            raise UnsafeMigration(
                f"{where}: becomes NOT NULL and existing NULLs need a value; "
                f"pass backfill={{{where!r}: ...}} (--backfill {where}=VALUE), "
                "or allow_lossy=True to rely on a pre-check"
            )
    return AlterAttr(name, spec["name"], _decl(spec), _decl(want), lossy=bool(reasons), backfill=backfill)


def _reverse_of(snap: dict[str, Any], entity: str, spec: dict[str, Any]) -> str | None:
    """The name of the other side of relation ``entity.spec`` in ``snap``."""
    if not spec["type"].startswith("entity:"):
        return None
    other = snap["entities"].get(spec["type"][len("entity:") :])
    if other is None:
        return None
    declared = spec["options"].get("reverse")
    for candidate in other["attrs"]:
        if candidate is spec:
            continue
        if declared is not None and candidate["name"] == declared:
            return str(candidate["name"])
        if (
            declared is None
            and candidate["type"] == f"entity:{entity}"
            and candidate["options"].get("reverse") in (None, spec["name"])
        ):
            return str(candidate["name"])
    return None


def _adds(b: _Builder) -> None:
    came = [n for n in b.new["entities"] if n not in b.cur["entities"]]
    for name in sorted(came, key=lambda n: (_depth(b.new, n), n)):
        definition = definition_of(b.new, name)
        keep = [
            a
            for a in definition["attrs"]
            if not a["type"].startswith("entity:") or a["name"] in b.new["entities"][name]["primary_key"]
        ]
        names = {a["name"] for a in keep}
        for key, _, _ in _COMPOSITES:
            definition[key] = [k for k in definition[key] if set(k) <= names]
        definition["attrs"] = keep
        b.emit(AddEntity(name, **definition))
        b.added.add(name)
    for relations in (False, True):
        for name, target in b.new["entities"].items():
            for spec in target["attrs"]:
                if spec["type"].startswith("entity:") == relations:
                    _add_attr(b, name, spec)
    for name, target in b.new["entities"].items():
        for key, add, _ in _COMPOSITES:
            for names in target[key]:
                if names not in b.cur["entities"][name][key]:
                    b.emit(add(name, names))


def _add_attr(b: _Builder, name: str, spec: dict[str, Any]) -> None:
    if find_attr(b.cur["entities"][name], spec["name"]) >= 0:
        return
    where = f"{name}.{spec['name']}"
    backfill = b.flags["backfill"].get(where, MISSING)
    existing = (
        name not in b.added and not b.cur["entities"][name]["bases"] and spec["kind"] != "Discriminator"
    )
    if existing and needs_backfill(spec) and backfill is MISSING and implied_backfill(_decl(spec)) is MISSING:
        raise UnsafeMigration(
            f"{where} is NOT NULL and existing rows need a value: pass backfill={{{where!r}: ...}} "
            f"(--backfill {where}=VALUE), or declare it Optional or with a constant default="
        )
    existing_names = {a["name"] for a in b.cur["entities"][name]["attrs"]}
    order = [a["name"] for a in b.new["entities"][name]["attrs"]]
    after_me = order[order.index(spec["name"]) + 1 :]
    before = next((n for n in after_me if n in existing_names), None)
    b.emit(AddAttr(name, spec["name"], _decl(spec), backfill=backfill, before=before))
    # the other side of a new relation goes right after it, so no snapshot has half a relation
    reverse = _reverse_of(b.new, name, spec)
    if reverse is not None:
        other = spec["type"][len("entity:") :]
        other_spec = b.new["entities"][other]["attrs"][find_attr(b.new["entities"][other], reverse)]
        _add_attr(b, other, other_spec)


def autodetect(
    old: dict[str, Any],
    new: dict[str, Any],
    *,
    renames: dict[str, str] | None = None,
    backfill: dict[str, Any] | None = None,
    allow_drop: bool = False,
    allow_lossy: bool = False,
) -> list[Operation]:
    """The operations that turn snapshot ``old`` into ``new``; raises UnsafeMigration for what needs a flag.

    ``renames``: ``{"Person": "Human", "Person.name": "full_name"}`` (old names); ``backfill``:
    ``{"Person.level": 1}`` (new names), the value existing rows get in a new NOT NULL attribute.
    """
    old = old or {"format": 1, "entities": {}}
    flags = {"allow_drop": allow_drop, "allow_lossy": allow_lossy, "backfill": dict(backfill or {})}
    b = _Builder(old, new, flags)
    _apply_renames(b, dict(renames or {}))
    _drops(b)
    _alters(b)
    _adds(b)
    _check_order(b)
    return b.ops


def _check_order(b: _Builder) -> None:
    for name, entity in b.new["entities"].items():
        have = [a["name"] for a in b.cur["entities"][name]["attrs"]]
        want = [a["name"] for a in entity["attrs"]]
        if have != want:
            raise MigrationError(
                f"{name}: the attributes were reordered ({have} -> {want}); a migration cannot move an "
                "attribute: keep the declaration order of existing attributes"
            )
    if b.cur["entities"] != b.new["entities"]:
        different = sorted(n for n in b.new["entities"] if b.cur["entities"].get(n) != b.new["entities"][n])
        raise MigrationError(f"autodetect could not express the change of {', '.join(different)}")
