"""Helpers of the operation, autodetect and file tests: snapshot builders, hypothesis strategies of
snapshots, and a namespace to execute rendered operations in."""

from __future__ import annotations

import copy
import datetime
import decimal
import uuid
from typing import Any

import pony.orm
from hypothesis import strategies as st

from ponykit.migrate import op


def spec(kind: str, type_: str, *args: Any, **options: Any) -> dict[str, Any]:
    """A snapshot attr dict without a name."""
    return {"kind": kind, "type": type_, "args": list(args), "options": dict(sorted(options.items()))}


def named(name: str, attr: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, **attr}


ID = spec("PrimaryKey", "int", auto=True)


def entity(*attrs: tuple[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A snapshot entity; ``extra`` overrides bases/table/discriminator/primary_key/composites."""
    result = {
        "bases": [],
        "table": None,
        "discriminator": None,
        "primary_key": ["id"],
        "attrs": [named(n, a) for n, a in attrs],
        "composite_keys": [],
        "composite_indexes": [],
    }
    result.update(extra)
    return result


def snap(**entities: dict[str, Any]) -> dict[str, Any]:
    return {"format": 1, "entities": copy.deepcopy(entities)}


def person_pet() -> dict[str, Any]:
    """Person 1-n Pet, Person m-n Club, a Dog subclass of Pet."""
    return snap(
        Person=entity(
            ("id", ID),
            ("name", spec("Required", "str", 80, index=True)),
            ("age", spec("Optional", "int")),
            ("pets", spec("Set", "entity:Pet", reverse="owner")),
            ("clubs", spec("Set", "entity:Club", reverse="members")),
            composite_keys=[["name", "age"]],
        ),
        Pet=entity(
            ("id", ID),
            ("owner", spec("Required", "entity:Person", reverse="pets")),
            ("nick", spec("Optional", "str")),
        ),
        Dog=entity(("bark", spec("Optional", "str", 20)), bases=["Pet"], primary_key=["id"]),
        Club=entity(("id", ID), ("members", spec("Set", "entity:Person", reverse="clubs"))),
    )


def namespace() -> dict[str, Any]:
    """Globals to execute a rendered operation in (what a migration file imports)."""
    names: dict[str, Any] = {name: getattr(pony.orm, name) for name in dir(pony.orm) if name[0].isupper()}
    names.update(
        op=op,
        Decimal=decimal.Decimal,
        UUID=uuid.UUID,
        datetime=datetime.datetime,
        date=datetime.date,
        time=datetime.time,
        timedelta=datetime.timedelta,
    )
    return names


def rebuilt(operation: op.Operation) -> op.Operation:
    """``operation`` rendered and executed again."""
    result: op.Operation = eval(operation.render(), namespace())
    return result


# -- hypothesis: random snapshots whose attribute names keep one global order --------------------------

_SCALARS = st.sampled_from(
    [
        spec("Optional", "int"),
        spec("Optional", "int", size=64),
        spec("Required", "int"),
        spec("Optional", "str"),
        spec("Optional", "str", 40),
        spec("Required", "str", 80, index=True),
        spec("Optional", "str", unique=True, nullable=True),
        spec("Optional", "float"),
        spec("Required", "Decimal", 10, 2),
        spec("Optional", "datetime"),
        spec("Optional", "bool"),
        spec("Optional", "Json"),
        spec("Optional", "LongStr"),
    ]
)
_ENTITIES = ("A", "B", "C")
_RELATION_KINDS = [("Optional", "Set"), ("Set", "Set"), ("Required", "Set"), ("Optional", "Optional")]


@st.composite
def snapshots(draw: st.DrawFn) -> dict[str, Any]:
    """A snapshot of up to three root entities, a subclass, relation pairs and composite keys."""
    names = draw(st.lists(st.sampled_from(_ENTITIES), unique=True, max_size=3).map(sorted))
    result: dict[str, Any] = {"format": 1, "entities": {}}
    for name in names:
        attr_names = draw(st.lists(st.sampled_from(["a0", "a1", "a2", "a3"]), unique=True, max_size=3))
        attrs = [("id", ID)] + [(a, draw(_SCALARS)) for a in sorted(attr_names)]
        keyable = [n for n, a in attrs if a["type"] in ("int", "str") and not a["options"].get("unique")]
        keys = [keyable[:2]] if len(keyable) >= 2 and draw(st.booleans()) else []
        table = draw(st.sampled_from([None, None, f"t_{name.lower()}"]))
        result["entities"][name] = entity(*attrs, composite_keys=keys, table=table)
    if "A" in names and draw(st.booleans()):
        own = draw(st.lists(st.sampled_from(["s0", "s1"]), unique=True, max_size=2))
        disc = draw(st.sampled_from([None, "sub"]))
        result["entities"]["Sub"] = entity(
            *[(a, spec("Optional", "str")) for a in sorted(own)], bases=["A"], discriminator=disc
        )
    pairs = draw(
        st.lists(st.tuples(st.sampled_from(names or ["A"]), st.sampled_from(names or ["A"])), max_size=2)
    )
    for number, (left, right) in enumerate(pairs):
        if not names:
            break
        kinds = draw(st.sampled_from(_RELATION_KINDS))
        one, two = f"r{number}x", f"r{number}y"
        result["entities"][left]["attrs"].append(named(one, spec(kinds[0], f"entity:{right}", reverse=two)))
        result["entities"][right]["attrs"].append(named(two, spec(kinds[1], f"entity:{left}", reverse=one)))
    return result


# -- until ponykit._pony.attr_spec lands: a stand-in door for unbound attributes (tests only) ----------

_TYPE_NAMES = {
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    bytes: "bytes",
    decimal.Decimal: "Decimal",
    datetime.datetime: "datetime",
    datetime.date: "date",
    datetime.time: "time",
    datetime.timedelta: "timedelta",
    uuid.UUID: "UUID",
    pony.orm.Json: "Json",
    pony.orm.LongStr: "LongStr",
    pony.orm.IntArray: "IntArray",
    pony.orm.StrArray: "StrArray",
    pony.orm.FloatArray: "FloatArray",
}


def _value(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    if callable(value):
        return {"callable": f"{value.__module__}.{value.__qualname__}"}
    return value


def _stand_in_attr_spec(attribute: Any) -> dict[str, Any]:
    py_type = attribute.py_type
    type_name = f"entity:{py_type}" if isinstance(py_type, str) else _TYPE_NAMES[py_type]
    options: dict[str, Any] = {k: _value(v) for k, v in attribute.kwargs.items()}
    slots = {
        "unique": attribute.is_unique if not attribute.is_pk else None,
        "nullable": attribute.nullable,
        "auto": attribute.auto or None,
        "index": attribute.index,
        "sql_default": attribute.sql_default,
        "sql_type": attribute.sql_type,
        "column": attribute.column,
        "columns": list(attribute.columns) if attribute.columns else None,
        "reverse": attribute.reverse,
        "cascade_delete": attribute.cascade_delete,
    }
    options.update({k: v for k, v in slots.items() if v is not None})
    return {
        "kind": type(attribute).__name__,
        "type": type_name,
        "args": list(attribute.args),
        "options": dict(sorted(options.items())),
    }


def install_door(monkeypatch: Any) -> None:
    """Give ``ponykit._pony`` an ``attr_spec`` when the real one is not there yet."""
    from ponykit import _pony

    if not hasattr(_pony, "attr_spec"):
        monkeypatch.setattr(_pony, "attr_spec", _stand_in_attr_spec, raising=False)
