"""App mode's generated diff of a ``bulk_update`` batch (private to ``Audited``): the old rows against
the values the batch bound, one loop generated per entity and set columns, for batches of 10,000s of
rows where a generic loop per attribute costs more than the statements themselves."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson

from .. import _pony
from .._codegen import build_function
from ._audit_plan import AuditPlan, Layout, same_value

__all__ = ["differ"]


def differ(plan: AuditPlan, before: Layout, columns: tuple[str, ...], layout: Layout, shift: int = 0) -> Any:
    """The generated diff of bulk_update rows setting ``columns`` (one plain column per attribute of
    ``layout``) against the rows read before (``before``'s columns, from index ``shift`` of each):
    ``diff(rows, old, key_of_raw) -> (keys, changes as UTF-8 JSON)`` of the rows that changed, as
    ``_raw_update`` would find them."""
    cache_key = (before.columns, columns, layout.columns, (shift,))
    found = plan.differs.get(cache_key)
    if found is not None:
        return found
    nkey = len(plan.key_columns)
    namespace: dict[str, Any] = {"_dumps": orjson.dumps}
    if plan.int_key and nkey == 1:
        key_line = "key = str(first) if type(first) is int else key_of_raw(values[:1])"
    else:
        key_line = f"key = key_of_raw(values[:{nkey}])"
    lines = [
        "def diff(rows, old, key_of_raw):",
        "    keys = []",
        "    texts = []",
        "    get = old.get",
        "    for values in rows:",
        "        first = values[0]",
        f"        {key_line}",
        "        previous = get(key)",
        "        if previous is None:",
        "            continue  # no such row: bulk_update skipped it",
    ]
    new_at = [nkey + columns.index(f.columns[0]) for f in layout.fields]
    old_at = [shift + before.columns.index(f.columns[0]) for f in layout.fields]
    if (
        old_at == list(range(shift, shift + len(before.columns)))
        and new_at == list(range(nkey, nkey + len(columns)))
        and all(_exact(f) for f in layout.fields)
    ):
        # Equal tuples mean equal JSON forms for these types: a row written with its own values is skipped
        # (a whole old row, key first, compares with the whole bound row: their keys are equal)
        same = "previous == values" if shift == nkey else f"previous == values[{nkey}:]"
        lines += [f"        if {same}:", "            continue"]
    lines.append("        changes = {}")
    for n, (f, i, j) in enumerate(zip(layout.fields, old_at, new_at, strict=True)):
        conv = _raw_json(f)
        lines += [
            f"        x = previous[{i}]",
            f"        y = values[{j}]",
            "        if x != y or type(x) is not type(y):",
        ]
        point = _decimal_point(f)
        if conv is not None and point is not None:
            # A Decimal at the column's scale is its own text (as the field's fast dumper finds), inline
            namespace[f"_conv{n}"] = conv
            namespace["_Decimal"] = Decimal
            for v in ("x", "y"):
                lines += [
                    f"            if {v} is not None:",
                    f"                {v} = t if type({v}) is _Decimal and "
                    f"(t := str({v}))[{point}:{point + 1}] == '.' else _conv{n}({v})",
                ]
        elif conv is not None:
            namespace[f"_conv{n}"] = conv
            lines += [
                "            if x is not None:",
                f"                x = _conv{n}(x)",
                "            if y is not None:",
                f"                y = _conv{n}(y)",
            ]
        namespace[f"_name{n}"] = f.name
        lines += ["            if x != y:", f"                changes[_name{n}] = [x, y]"]
    lines += [
        "        if changes:",
        "            keys.append(key)",
        "            texts.append(_dumps(changes))",
        "    return keys, texts",
    ]
    found = build_function("diff", lines, namespace, label=f"audit.diff {plan.name}")
    plan.differs[cache_key] = found
    return found


def _decimal_point(f: Any) -> int | None:
    """Where ``str()`` puts the point of a Decimal of ``f`` at its column's scale (None: no shortcut)."""
    if _pony.attr_type(f.attr) is not Decimal or f.fast is None or f.fast is same_value:
        return None
    quantum = _pony.decimal_quantum(f.attr)
    exponent = quantum.as_tuple().exponent if quantum is not None else None
    if isinstance(exponent, int) and -3 <= exponent <= -1:
        return exponent - 1  # scientific notation puts at least four characters after a point
    return None


def _exact(f: Any) -> bool:
    """Whether equal raw values of ``f`` (old as read, new as bound) always have equal JSON forms."""
    py_type = _pony.attr_type(f.attr)
    if py_type is Decimal:  # at the column's scale: equal Decimals have one text
        return f.fast is not None and f.fast is not same_value
    return f.fast is not None and py_type in (int, str)


def _raw_json(f: Any) -> Callable[[Any], Any] | None:
    """A non-null raw value -> its JSON form (None: the raw value is its JSON form)."""
    if f.fast is not None:
        return None if f.fast is same_value else f.fast
    return lambda v: f.json_of_raw((v,))
