"""The query fast path: JSON straight from the rows of a query's own SELECT, no entity objects.

Used by :func:`ponykit.serialization.to_json` when every requested field is a column of the entity (a
value, or a to-one relation as its key), the entity has no subclasses, and no nesting is asked for.
Each column gets one precomputed conversion that gives exactly what the entity path gives for the same
value, and one generated function turns a row into its output dict, so both paths produce the same
bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from .. import _pony
from .._codegen import build_function
from ..security.sensitive import SENSITIVE_ATTR
from ._codec import raw_dumper, raw_inline, value_dumper
from ._plan import REF, VALUE, Field, Plan

__all__ = ()

RowFn = Callable[[tuple[Any, ...]], dict[str, Any]]


def eligible(plan: Plan, entity: Any) -> bool:
    """True when ``plan`` over rows of ``entity`` can be served from the query's rows."""
    if plan.entity is not entity or not plan.flat or _pony.has_subclasses(entity):
        return False
    # Encrypted values may bind their ciphertext to the row (associated data): decrypt through objects.
    return not any(getattr(_pony.attr_info(f.attr).py_type, SENSITIVE_ATTR, False) for f in plan.fields)


def rows_to_dicts(query: Any, plan: Plan, limit: int | None, offset: int | None) -> list[dict[str, Any]]:
    """The serialized form of every row of ``query`` (an entity query of ``plan.entity``)."""
    lazy = tuple(f.attr for f in plan.fields if f.kind == VALUE and _pony.attr_info(f.attr).lazy)
    rows, offsets = _pony.query_entity_rows(query, lazy, limit, offset)
    if not rows:
        return []
    # The row function depends on the plan and the columns' positions only: generated once per pair.
    key = tuple(tuple(offsets[f.attr]) for f in plan.fields)
    row = plan.row_fns.get(key)
    if row is None:
        row = plan.row_fns[key] = _row_function(plan, offsets)
    return list(map(row, rows))


def _row_function(plan: Plan, offsets: dict[Any, list[int]]) -> RowFn:
    """Generate ``row -> dict`` for this plan and these column positions.

    One dict display per row, with the conversions inlined, is about three times faster than building
    columns and zipping them back into dicts.
    """
    namespace: dict[str, Any] = {"_Decimal": Decimal}
    items = [f"{f.name!r}: {_item(namespace, i, f, offsets[f.attr])}" for i, f in enumerate(plan.fields)]
    source = ["def row(r):", "    return {" + ", ".join(items) + "}"]
    return build_function("row", source, namespace, label=f"serialization.query_row {plan.entity.__name__}")


def _item(namespace: dict[str, Any], i: int, f: Field, positions: list[int]) -> str:
    """The expression of field ``i``'s output value from the row ``r``; fills ``namespace``."""
    if not f.name.isidentifier():
        # Internal invariant (Pony attribute names are class attribute names): not a user error.
        raise AssertionError(f"attribute name {f.name!r} is not an identifier")
    info = _pony.attr_info(f.attr)
    if f.kind == VALUE:
        return _column(namespace, f"c{i}", f.attr, info.converters[0], f.dump, positions[0])
    assert f.kind == REF
    leaves = _pony.raw_pk_leaf_attributes(info.py_type)
    parts = [
        _column(namespace, f"c{i}_{j}", leaf, converter, value_dumper(leaf), position)
        for j, (leaf, converter, position) in enumerate(zip(leaves, info.converters, positions, strict=True))
    ]
    if len(parts) == 1:
        return parts[0]
    return f"None if r[{positions[0]}] is None else [{', '.join(parts)}]"


def _column(namespace: dict[str, Any], name: str, attr: Any, converter: Any, dump: Any, position: int) -> str:
    var = f"r[{position}]"
    inline = raw_inline(attr, converter, var, name)
    if inline is not None:
        expression, constant = inline
        namespace[name] = constant
    else:
        convert = raw_dumper(attr, converter, dump)
        if convert is None:
            return var
        namespace[name] = convert
        expression = f"{name}({var})"
    return f"(None if {var} is None else {expression})"
