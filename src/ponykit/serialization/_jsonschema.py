"""``json_schema(Entity, ...)``: the JSON Schema (draft 2020-12) of what ``to_dict``/``to_json`` produce."""

from __future__ import annotations

from typing import Any

from .. import _pony
from ._codec import nullable, value_schema
from ._plan import NESTED, NESTED_MANY, REF, REFS, VALUE, Plan

__all__ = ()

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def key_schema(entity: Any) -> dict[str, Any]:
    """The schema of an instance's primary key in JSON form: a scalar, or an array for composite keys."""
    leaves = [value_schema(a) for a in _pony.raw_pk_leaf_attributes(entity)]
    if len(leaves) == 1:
        return leaves[0]
    return {"type": "array", "prefixItems": leaves, "items": False, "minItems": len(leaves)}


def object_schema(plan: Plan, ancestors: tuple[Any, ...] = ()) -> dict[str, Any]:
    """The schema of one serialized object under ``plan``."""
    properties: dict[str, Any] = {}
    for f in plan.fields:
        info = _pony.attr_info(f.attr)
        if f.kind == VALUE:
            schema = value_schema(f.attr)
        elif f.kind in (REF, REFS):
            schema = key_schema(info.py_type)
        else:
            assert f.sub is not None
            nested = object_schema(f.sub, (*ancestors, plan.entity))
            if info.py_type in (*ancestors, plan.entity):
                # the cycle guard may put a key where an ancestor object would repeat
                nested = {"anyOf": [nested, key_schema(info.py_type)]}
            schema = nested
        if f.kind in (REFS, NESTED_MANY):
            schema = {"type": "array", "items": schema}
        elif f.nullable and (f.kind in (REF, NESTED) or info.nullable):
            schema = nullable(schema)
        properties[f.name] = schema
    return {
        "type": "object",
        "title": plan.entity.__name__,
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def document_schema(plan: Plan, *, many: bool) -> dict[str, Any]:
    """The top-level schema: one object, or an array of objects when ``many``."""
    schema = object_schema(plan)
    if many:
        schema = {"type": "array", "items": schema}
    return {"$schema": DRAFT, **schema}
