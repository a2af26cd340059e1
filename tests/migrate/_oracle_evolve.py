"""The oracle's hypothesis strategies: a model (snapshot-shaped dict, see ``_oracle_models``), its rows, and a
sequence of evolutions, each with the hints ``make`` needs (renames, backfills, allow_drop) and what it does
to the existing rows (so ``data_check`` knows what must have survived).

Every drawn model is one Pony accepts on the dialect: scalar types of every kind Pony supports there (sizes,
precision, unsigned), Optional/Required, unique, index, composite keys and indexes, to-one relations (with
self-references) and many-to-many relations between plain entities, and one single-table hierarchy
``Item`` > ``Gadget`` (> ``Widget``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from _oracle_models import EMPTY, Data, Model, value_for
from hypothesis import strategies as st

__all__ = ["KINDS", "Scenario", "Step", "apply_step", "scalar_types", "scenarios"]

_ALL_TYPES = ["str", "LongStr", "int", "float", "Decimal", "bool", "date", "datetime", "time", "timedelta"]
_ALL_TYPES += ["UUID", "bytes", "Json", "IntArray", "StrArray", "FloatArray"]
_INDEXABLE = {"str", "int", "Decimal", "date", "datetime", "UUID"}
_BACKFILLABLE = ["int", "str", "bool"]  # backfill values a migration file writes as plain literals
PLAIN_NAMES = ["Author", "Book", "Shelf"]
NEW_NAMES = ["Note", "Label", "Folder"]
SUB_NAMES = ["Gizmo", "Doohickey"]
KINDS = (
    "add_entity",
    "drop_entity",
    "rename_entity",
    "add_attr",
    "drop_attr",
    "rename_attr",
    "widen",
    "toggle_index",
    "toggle_unique",
    "toggle_nullable",
    "add_m2m",
    "remove_m2m",
    "add_subclass",
    "rename_subclass",
)


def scalar_types(dialect: str) -> list[str]:
    """Every scalar type Pony supports on ``dialect`` with rows: MySQL has no arrays; Pony 0.7.20 reads a
    SQLite TIME back as text, so reloading one raises UnrepeatableReadError (no migration involved)."""
    return [
        t
        for t in _ALL_TYPES
        if not (dialect == "mysql" and t.endswith("Array")) and not (dialect == "sqlite" and t == "time")
    ]


@dataclass
class Step:
    """One evolution: the model after it, the hints for ``make``, and its effect on existing rows."""

    kind: str
    after: Model
    renames: dict[str, str] = field(default_factory=dict)
    backfill: dict[str, Any] = field(default_factory=dict)
    allow_drop: bool = False
    entity_renames: dict[str, str] = field(default_factory=dict)
    attr_renames: dict[tuple[str, str], str] = field(default_factory=dict)  # (entity, old) -> new
    dropped_entities: set[str] = field(default_factory=set)
    dropped_attrs: set[tuple[str, str]] = field(default_factory=set)
    added_attrs: dict[tuple[str, str], Any] = field(default_factory=dict)  # value in old rows

    def describe(self) -> str:
        """One line for a failure report."""
        hints = {k: v for k, v in (("renames", self.renames), ("backfill", self.backfill)) if v}
        return f"{self.kind} {hints or ''}".strip()


@dataclass
class Scenario:
    """A drawn model, its rows and evolutions (``models[i + 1]`` is the model after ``steps[i]``)."""

    models: list[Model]
    steps: list[Step]
    counts: dict[str, int]
    salt: int


def _entity(bases: list[str], attrs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "bases": bases,
        "table": None,
        "discriminator": None,
        "primary_key": ["id"],
        "attrs": attrs,
        "composite_keys": [],
        "composite_indexes": [],
    }


class _Names:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"


@st.composite
def scalar_attr(draw: Any, dialect: str, name: str, types: list[str] | None = None) -> dict[str, Any]:
    """One Required/Optional scalar attribute of a type Pony supports on ``dialect``."""
    kind_type = draw(st.sampled_from(types or scalar_types(dialect)))
    args: list[Any] = []
    options: dict[str, Any] = {}
    if kind_type == "str" and draw(st.booleans()):
        args = [draw(st.integers(8, 60))]
    elif kind_type == "int":
        size = draw(st.sampled_from([None, 8, 16, 32, 64]))
        if size:
            options["size"] = size
        if size != 64 and draw(st.booleans()):
            options["unsigned"] = True
    elif kind_type == "Decimal" and draw(st.booleans()):
        scale = draw(st.integers(1, 4))
        args = [draw(st.integers(scale + 3, 14)), scale]
    elif kind_type == "datetime" and draw(st.booleans()):
        options["precision"] = draw(st.sampled_from([0, 3, 6]))
    kind = draw(st.sampled_from(["Required", "Optional"]))
    if draw(st.integers(0, 5)) == 0:  # a declared column name: renaming the attribute keeps the column
        options["column"] = f"{name}_col"
    if kind_type in _INDEXABLE:
        flag = draw(st.sampled_from([None, "index", "unique"]))
        if flag:
            options[flag] = True
    return {"name": name, "kind": kind, "type": kind_type, "args": args, "options": options}


def _relation(model: Model, child: str, parent: str, names: _Names, m2m: bool = False) -> None:
    one, many = names("r"), names("s")
    kind = "Set" if m2m else "Optional"
    model["entities"][child]["attrs"].append(
        {"name": one, "kind": kind, "type": f"entity:{parent}", "args": [], "options": {"reverse": many}}
    )
    model["entities"][parent]["attrs"].append(
        {"name": many, "kind": "Set", "type": f"entity:{child}", "args": [], "options": {"reverse": one}}
    )


@st.composite
def models(draw: Any, dialect: str, names: _Names) -> Model:
    """A model: 1-3 plain entities, the Item hierarchy, to-one and many-to-many relations."""
    model: Model = {"entities": {}}
    plain = PLAIN_NAMES[: draw(st.integers(1, 3))]
    for entity in plain:
        attrs = [draw(scalar_attr(dialect, names("f"))) for _ in range(draw(st.integers(1, 4)))]
        model["entities"][entity] = _entity([], attrs)
        if draw(st.integers(0, 3)) == 0:  # a declared table name: renaming the entity keeps the table
            model["entities"][entity]["table"] = f"{entity.lower()}_tbl"
        keyable = [a["name"] for a in attrs if a["type"] in _INDEXABLE and a["kind"] == "Required"]
        if len(keyable) >= 2 and draw(st.booleans()):
            model["entities"][entity]["composite_keys"].append(keyable[:2])
        indexable = [a["name"] for a in attrs if a["type"] in _INDEXABLE | {"bool"}]
        keys = model["entities"][entity]["composite_keys"]
        if len(indexable) >= 2 and draw(st.booleans()) and [set(k) for k in keys] != [set(indexable[-2:])]:
            model["entities"][entity]["composite_indexes"].append(indexable[-2:])
    model["entities"]["Item"] = _entity([], [draw(scalar_attr(dialect, names("f")))])
    model["entities"]["Gadget"] = _entity(["Item"], [draw(scalar_attr(dialect, names("f")))])
    if draw(st.booleans()):  # an explicit discriminator value: renaming the class keeps the rows' value
        model["entities"]["Gadget"]["discriminator"] = "gadget_d"
    if draw(st.booleans()):
        model["entities"]["Widget"] = _entity(["Gadget"], [draw(scalar_attr(dialect, names("f")))])
    everyone = list(model["entities"])
    for _ in range(draw(st.integers(0, 2))):
        _relation(model, draw(st.sampled_from(everyone)), draw(st.sampled_from([*plain, "Item"])), names)
    if len(plain) >= 2 and draw(st.booleans()):
        _relation(model, plain[0], plain[1], names, m2m=True)
    return model


# ---------------------------------------------------------------------------------------------------------
# Evolutions


def _plain(model: Model) -> list[str]:
    entities = model["entities"]
    subclassed = {base for e in entities.values() for base in e["bases"]}
    return [n for n, e in entities.items() if not e["bases"] and n not in subclassed]


def _own_scalars(model: Model, entity: str) -> list[dict[str, Any]]:
    return [
        a
        for a in model["entities"][entity]["attrs"]
        if a["kind"] in ("Required", "Optional") and not a["type"].startswith("entity:")
    ]


def _in_composites(model: Model, entity: str, attr: str) -> bool:
    e = model["entities"][entity]
    return any(attr in group for group in [*e["composite_keys"], *e["composite_indexes"]])


def _find(model: Model, entity: str, attr: str) -> dict[str, Any]:
    return next(a for a in model["entities"][entity]["attrs"] if a["name"] == attr)


def _widened(attr: dict[str, Any]) -> dict[str, Any] | None:
    new = copy.deepcopy(attr)
    if attr["type"] == "str" and attr["args"]:
        new["args"] = [attr["args"][0] + 20]
    elif attr["type"] == "int" and attr["options"].get("size", 32) < 64:
        new["options"]["size"] = {8: 16, 16: 32, 32: 64}[attr["options"].get("size", 32)]
        new["options"].pop("unsigned", None) if new["options"]["size"] == 64 else None
    elif attr["type"] == "Decimal" and attr["args"]:
        new["args"] = [attr["args"][0] + 2, attr["args"][1]]
    else:
        return None
    return new


def _rename_entity(model: Model, old: str, new: str) -> None:
    entities = model["entities"]
    entities[new] = entities.pop(old)
    for entity in entities.values():
        entity["bases"] = [new if b == old else b for b in entity["bases"]]
        for attr in entity["attrs"]:
            if attr["type"] == f"entity:{old}":
                attr["type"] = f"entity:{new}"


@st.composite
def step(draw: Any, model: Model, dialect: str, names: _Names, distinct: set[tuple[str, str]]) -> Step:
    """One evolution applicable to ``model`` (``distinct``: attributes whose row values are all distinct and
    present, kept up to date through renames)."""
    after = copy.deepcopy(model)
    entities = after["entities"]
    plain = _plain(after)
    everyone = list(entities)
    scalars = [(e, a["name"]) for e in everyone for a in _own_scalars(after, e)]
    free = [(e, a) for e, a in scalars if not _in_composites(after, e, a)]
    m2m = [
        (e, a["name"], a["type"][7:], a["options"]["reverse"])
        for e in everyone
        for a in entities[e]["attrs"]
        if a["kind"] == "Set"
        and _find(after, a["type"][7:], a["options"]["reverse"])["kind"] == "Set"
        and e < a["type"][7:]
    ]
    subclasses = [n for n, e in entities.items() if e["bases"]]
    options: list[str] = ["add_attr", "toggle_index", "add_subclass"]
    options += ["add_entity"] if any(n not in entities for n in NEW_NAMES) else []
    options += ["drop_entity", "rename_entity"] if plain else []
    options += ["drop_attr"] if free else []
    options += ["rename_attr"] if scalars else []
    options += ["widen"] if any(_widened(_find(after, e, a)) for e, a in scalars) else []
    options += ["toggle_unique", "toggle_nullable"] if distinct else []
    options += ["add_m2m"] if len(everyone) >= 2 else []
    options += ["remove_m2m"] if m2m else []
    options += ["rename_subclass"] if subclasses else []
    kind = draw(st.sampled_from(options))
    result = Step(kind, after)
    if kind == "add_entity":
        name = next(n for n in NEW_NAMES if n not in entities)
        entities[name] = _entity([], [draw(scalar_attr(dialect, names("f")))])
        if plain and draw(st.booleans()):
            parent = draw(st.sampled_from(plain))
            _relation(after, name, parent, names)
            result.added_attrs[(parent, entities[parent]["attrs"][-1]["name"])] = frozenset()
    elif kind == "drop_entity":
        name = draw(st.sampled_from(plain))
        del entities[name]
        result.dropped_entities.add(name)
        distinct -= {pair for pair in distinct if pair[0] == name}
        result.allow_drop = True
        for other, entity in entities.items():
            for attr in list(entity["attrs"]):
                if attr["type"] == f"entity:{name}":
                    entity["attrs"].remove(attr)
                    result.dropped_attrs.add((other, attr["name"]))
    elif kind in ("rename_entity", "rename_subclass"):
        old = draw(st.sampled_from(plain if kind == "rename_entity" else subclasses))
        new = old + "V" + str(names.n)
        names("x")
        _rename_entity(after, old, new)
        result.renames[old] = new
        result.entity_renames[old] = new
        for pair in [p for p in distinct if p[0] == old]:
            distinct.discard(pair)
            distinct.add((new, pair[1]))
    elif kind == "add_attr":
        entity = draw(st.sampled_from(everyone))
        attr = draw(scalar_attr(dialect, names("f")))
        attr["options"].pop("unique", None)  # old rows would all hold the same value
        if attr["kind"] == "Required":
            attr = draw(scalar_attr(dialect, attr["name"], _BACKFILLABLE))
            attr["options"].pop("unique", None)
            attr["kind"] = "Required"
            value = value_for(attr, 0, 7)
            result.backfill[f"{entity}.{attr['name']}"] = value
            result.added_attrs[(entity, attr["name"])] = value
        else:
            result.added_attrs[(entity, attr["name"])] = EMPTY
        entities[entity]["attrs"].append(attr)
    elif kind == "drop_attr":
        entity, name = draw(st.sampled_from(free))
        entities[entity]["attrs"].remove(_find(after, entity, name))
        result.dropped_attrs.add((entity, name))
        result.allow_drop = True
        distinct.discard((entity, name))
    elif kind == "rename_attr":
        entity, old = draw(st.sampled_from(scalars))
        new = names("g")
        _find(after, entity, old)["name"] = new
        for group in [*entities[entity]["composite_keys"], *entities[entity]["composite_indexes"]]:
            group[:] = [new if a == old else a for a in group]
        result.renames[f"{entity}.{old}"] = new
        result.attr_renames[(entity, old)] = new
        if (entity, old) in distinct:
            distinct.discard((entity, old))
            distinct.add((entity, new))
    elif kind == "widen":
        entity, name = draw(st.sampled_from([(e, a) for e, a in scalars if _widened(_find(after, e, a))]))
        attr = _find(after, entity, name)
        attr.update(_widened(attr) or {})
    elif kind == "toggle_index":
        candidates = [(e, a) for e, a in scalars if _find(after, e, a)["type"] in _INDEXABLE]
        if not candidates:
            return draw(step(model, dialect, names, distinct))
        attr = _find(after, *draw(st.sampled_from(candidates)))
        if attr["options"].pop("index", None) is None:
            attr["options"].pop("unique", None)
            attr["options"]["index"] = True
    elif kind == "toggle_unique":
        candidates = [p for p in sorted(distinct) if _find(after, *p)["type"] in _INDEXABLE]
        if not candidates:
            return draw(step(model, dialect, names, distinct))
        attr = _find(after, *draw(st.sampled_from(candidates)))
        if attr["options"].pop("unique", None) is None:
            attr["options"].pop("index", None)
            attr["options"]["unique"] = True
    elif kind == "toggle_nullable":
        entity, name = draw(st.sampled_from(sorted(distinct)))
        attr = _find(after, entity, name)
        # Becoming NOT NULL needs a backfill hint even though every row has a value (autodetect's rule);
        # only types whose backfill a migration file writes as a plain literal.
        if attr["type"] in ("str", "LongStr") and attr["kind"] == "Optional":
            if attr["options"].pop("nullable", None) is None:
                attr["options"]["nullable"] = True
            else:
                result.backfill[f"{entity}.{name}"] = "x"
        elif attr["type"] in (*_BACKFILLABLE, "float"):
            attr["kind"] = "Optional" if attr["kind"] == "Required" else "Required"
            if attr["kind"] == "Required":
                result.backfill[f"{entity}.{name}"] = value_for(attr, 0, 7)
        else:
            return draw(step(model, dialect, names, distinct))
    elif kind == "add_m2m":
        left, right = sorted(draw(st.lists(st.sampled_from(everyone), min_size=2, max_size=2, unique=True)))
        _relation(after, left, right, names, m2m=True)
        result.added_attrs[(left, entities[left]["attrs"][-1]["name"])] = frozenset()
        result.added_attrs[(right, entities[right]["attrs"][-1]["name"])] = frozenset()
    elif kind == "remove_m2m":
        left, attr, right, reverse = draw(st.sampled_from(m2m))
        entities[left]["attrs"].remove(_find(after, left, attr))
        entities[right]["attrs"].remove(_find(after, right, reverse))
        result.dropped_attrs |= {(left, attr), (right, reverse)}
        result.allow_drop = True
    elif kind == "add_subclass":
        name = next((n for n in SUB_NAMES if n not in entities), None)
        if name is None:
            return draw(step(model, dialect, names, distinct))
        hierarchy = [n for n in everyone if n not in plain]
        attr = draw(scalar_attr(dialect, names("f")))
        attr["options"].pop("unique", None)
        entities[name] = _entity([draw(st.sampled_from(hierarchy))], [attr])
    return result


def _descendants(model: Model, entity: str) -> set[str]:
    found = {entity}
    changed = True
    while changed:
        changed = False
        for name, e in model["entities"].items():
            if name not in found and any(b in found for b in e["bases"]):
                found.add(name)
                changed = True
    return found


def apply_step(data: Data, before: Model, item: Step) -> Data:
    """The rows expected after ``item`` from those expected before it (``before``: the model before)."""
    new: Data = {}
    for entity, rows in data.items():
        if entity in item.dropped_entities:
            continue
        target = item.entity_renames.get(entity, entity)
        new[target] = {key: dict(values) for key, values in rows.items()}
    after = item.after
    for (entity, attr), value in item.added_attrs.items():
        for name in _descendants(after, entity):
            for values in new.get(name, {}).values():
                values[attr] = value
    for entity, attr in item.dropped_attrs:
        for name in _descendants(before, entity):
            for values in new.get(item.entity_renames.get(name, name), {}).values():
                values.pop(attr, None)
    for (entity, old), new_name in item.attr_renames.items():
        for name in _descendants(after, entity):
            for values in new.get(name, {}).values():
                values[new_name] = values.pop(old)
    return new


@st.composite
def scenarios(draw: Any, dialect: str, max_steps: int = 3) -> Scenario:
    """A model, row counts, a salt for the values and 1..``max_steps`` evolutions."""
    names = _Names()
    first = draw(models(dialect, names))
    counts = {name: draw(st.integers(0, 3)) for name in first["entities"]}
    distinct = {(e, a["name"]) for e in first["entities"] for a in _own_scalars(first, e)}
    history = [first]
    steps: list[Step] = []
    for _ in range(draw(st.integers(1, max_steps))):
        item = draw(step(history[-1], dialect, names, distinct))
        steps.append(item)
        history.append(item.after)
    return Scenario(history, steps, counts, draw(st.integers(0, 99)))
