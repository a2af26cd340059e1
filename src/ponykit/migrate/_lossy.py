"""Which declared attribute changes may lose data (need ``allow_lossy``) and which widen.

Compared on the *declared* Pony options of two snapshot attr dicts, never on SQL types: a change is lossy
when some value the old declaration accepts may not fit the new one.
"""

from __future__ import annotations

from typing import Any

__all__ = ["becomes_not_null", "lossy_reasons"]

_EMPTY_TYPES = {"str", "LongStr", "Json", "IntArray", "StrArray", "FloatArray"}
# (old type, new type) pairs that keep every value
_WIDENING = {
    ("int", "float"),
    ("int", "Decimal"),
    ("str", "LongStr"),
    ("date", "datetime"),
    ("bool", "int"),
}


def _str_len(spec: dict[str, Any]) -> int | None:
    """Declared max length of a str (None: unbounded)."""
    if spec["args"] and isinstance(spec["args"][0], int):
        return int(spec["args"][0])
    value = spec["options"].get("max_len")
    return None if value is None else int(value)


def _decimal(spec: dict[str, Any]) -> tuple[int, int]:
    args = spec["args"]
    precision = args[0] if args else spec["options"].get("precision", 12)
    scale = args[1] if len(args) > 1 else spec["options"].get("scale", 2)
    return int(precision), int(scale)


def _nullable(spec: dict[str, Any]) -> bool:
    """Whether Pony makes the column NULL-able (Optional, unless a type with an empty value)."""
    declared = spec["options"].get("nullable")
    if declared is not None:
        return bool(declared)
    return spec["kind"] == "Optional" and spec["type"] not in _EMPTY_TYPES


def becomes_not_null(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether existing NULLs would violate the new declaration."""
    return _nullable(old) and not _nullable(new) and new["kind"] != "Set"


def lossy_reasons(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why changing ``old`` to ``new`` may lose data ([] for a safe change). NOT NULL is separate."""
    reasons = []
    old_type, new_type = old["type"], new["type"]
    if (old["kind"] == "Set") != (new["kind"] == "Set"):
        reasons.append(f"{old['kind']} -> {new['kind']} drops the stored relation")
    if old_type != new_type and (old_type, new_type) not in _WIDENING:
        reasons.append(f"type {old_type} -> {new_type} may not convert every value")
        return reasons
    if old["options"].get("sql_type") != new["options"].get("sql_type"):
        # a declared SQL type is opaque: nothing says the new one holds every old value
        reasons.append(f"sql_type {old['options'].get('sql_type')!r} -> {new['options'].get('sql_type')!r}")
    if new_type in ("str", "LongStr") and old_type in ("str", "LongStr"):
        was = None if old_type == "LongStr" else _str_len(old)
        now = None if new_type == "LongStr" else _str_len(new)
        if now is not None and (was is None or now < was):
            reasons.append(f"max length {was or 'unbounded'} -> {now}")
    if new_type == "int" and old_type == "int":
        was_size, now_size = old["options"].get("size", 32), new["options"].get("size", 32)
        if now_size < was_size:
            reasons.append(f"int size {was_size} -> {now_size}")
        was_unsigned, now_unsigned = (
            bool(old["options"].get("unsigned")),
            bool(new["options"].get("unsigned")),
        )
        if now_unsigned and not was_unsigned:
            reasons.append("signed -> unsigned (negative values)")
        elif was_unsigned and not now_unsigned and now_size <= was_size:
            reasons.append(f"unsigned -> signed at size {now_size}")
    if new_type == "Decimal" and old_type == "Decimal":
        (p0, s0), (p1, s1) = _decimal(old), _decimal(new)
        if s1 < s0 or p1 - s1 < p0 - s0:
            reasons.append(f"Decimal({p0}, {s0}) -> Decimal({p1}, {s1})")
    if new_type in ("datetime", "time") and old_type == new_type:
        was_p, now_p = old["options"].get("precision"), new["options"].get("precision")
        # Pony's default precision is 6 (MariaDB's 0 only widens)
        if now_p is not None and now_p < (6 if was_p is None else was_p):
            reasons.append(f"precision {was_p} -> {now_p}")
    return reasons
