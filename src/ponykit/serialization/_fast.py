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
from ..security.sensitive import SENSITIVE_ATTR
from ._codec import raw_dumper, raw_inline, value_dumper
from ._plan import REF, VALUE, Plan

__all__ = ()

RowFn = Callable[[tuple[Any, ...]], dict[str, Any]]


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
    return list(map(_row_function(plan, offsets), rows))


def _row_function(plan: Plan, offsets: dict[Any, list[int]]) -> RowFn:
    """Generate ``row -> dict`` for this plan and these column positions.

    One dict display per row, with the conversions inlined, is about three times faster than building
    columns and zipping them back into dicts.
    """
    namespace: dict[str, Any] = {"_Decimal": Decimal}
    items = []
    for i, f in enumerate(plan.fields):
        if not f.name.isidentifier():
            # Internal invariant (Pony attribute names are class attribute names): not a user error.
            raise AssertionError(f"attribute name {f.name!r} is not an identifier")
        positions = offsets[f.attr]
        if f.kind == VALUE:
            expression = _column(namespace, f"c{i}", f.attr, f.attr.converters[0], f.dump, positions[0])
            items.append(f"{f.name!r}: {expression}")
        else:
            assert f.kind == REF
            leaves = _pony.raw_pk_leaf_attributes(f.attr.py_type)
            parts = [
                _column(namespace, f"c{i}_{j}", leaf, converter, value_dumper(leaf), position)
                for j, (leaf, converter, position) in enumerate(
                    zip(leaves, f.attr.converters, positions, strict=True)
                )
            ]
            if len(parts) == 1:
                items.append(f"{f.name!r}: {parts[0]}")
            else:
                items.append(f"{f.name!r}: None if r[{positions[0]}] is None else [{', '.join(parts)}]")
    source = "def row(r):\n    return {" + ", ".join(items) + "}"
    exec(source, namespace)  # noqa: S102 - built from attribute names checked above and integer offsets
    return namespace["row"]  # type: ignore[no-any-return]


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
