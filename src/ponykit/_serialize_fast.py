"""The query fast path: JSON straight from the rows of a query's own SELECT, no entity objects.

Used by :func:`ponykit.serialization.to_json` when every requested field is a column of the entity (a
value, or a to-one relation as its key), the entity has no subclasses, and no nesting is asked for.
Each column gets one precomputed converter that gives exactly what the entity path gives for the
same value, so both paths produce the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _pony
from ._serialize_codec import raw_dumper, value_dumper
from ._serialize_plan import REF, VALUE, Plan
from .security.sensitive import SENSITIVE_ATTR

__all__ = ()

Column = Callable[[list[tuple[Any, ...]]], list[Any]]


def eligible(plan: Plan, entity: Any) -> bool:
    """True when ``plan`` over rows of ``entity`` can be served from the query's rows."""
    if plan.entity is not entity or not plan.flat or _pony.has_subclasses(entity):
        return False
    # Encrypted values may bind their ciphertext to the row (associated data): decrypt through objects.
    return not any(getattr(f.attr.py_type, SENSITIVE_ATTR, False) for f in plan.fields)


def rows_to_dicts(query: Any, plan: Plan, limit: int | None, offset: int | None) -> list[dict[str, Any]]:
    """The serialized form of every row of ``query`` (an entity query of ``plan.entity``)."""
    lazy = tuple(f.attr for f in plan.fields if f.kind == VALUE and f.attr.lazy)
    rows, offsets = _pony.query_entity_rows(query, lazy, limit, offset)
    if not rows:
        return []
    names = [f.name for f in plan.fields]
    columns = list(zip(*rows, strict=True))
    out_columns = []
    for f in plan.fields:
        positions = offsets[f.attr]
        if f.kind == VALUE:
            out_columns.append(_value_column(f.attr, f.dump, f.nullable, columns[positions[0]]))
        else:
            assert f.kind == REF
            out_columns.append(_ref_column(f.attr, [columns[p] for p in positions]))
    return [dict(zip(names, values, strict=True)) for values in zip(*out_columns, strict=True)]


def _value_column(attr: Any, dump: Any, nullable: bool, column: tuple[Any, ...]) -> Any:
    convert = raw_dumper(attr, attr.converters[0], dump)
    if convert is None:
        return column
    if nullable or None in column:
        return [None if v is None else convert(v) for v in column]
    return list(map(convert, column))


def _ref_column(attr: Any, columns: list[tuple[Any, ...]]) -> Any:
    leaves = _pony.raw_pk_leaf_attributes(attr.py_type)
    converted: list[Any] = []
    for leaf, converter, column in zip(leaves, attr.converters, columns, strict=True):
        convert = raw_dumper(leaf, converter, value_dumper(leaf))
        if convert is None:
            converted.append(column)
        else:
            converted.append([None if v is None else convert(v) for v in column])
    if len(converted) == 1:
        return converted[0]
    return [None if parts[0] is None else list(parts) for parts in zip(*converted, strict=True)]
