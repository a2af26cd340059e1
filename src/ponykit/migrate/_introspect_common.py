"""What the per-dialect catalog readers share: the order of a table's parts, referential actions."""

from __future__ import annotations

from ponykit._pony import PhysicalForeignKey, PhysicalIndex

__all__ = ["on_delete", "sort_table_parts"]


def sort_table_parts(
    indexes: list[PhysicalIndex], fks: list[PhysicalForeignKey]
) -> tuple[tuple[PhysicalIndex, ...], tuple[PhysicalForeignKey, ...]]:
    """Indexes and foreign keys in ``physical_schema``'s order (primary first, then by name and columns)."""
    indexes.sort(key=lambda i: (not i.primary, i.name or "", i.columns))
    fks.sort(key=lambda f: (f.name or "", f.columns))
    return tuple(indexes), tuple(fks)


def on_delete(rule: str | None) -> str | None:
    """A referential action as ``physical_schema`` spells it: None for the default (no action/restrict)."""
    if rule is None:
        return None
    rule = rule.upper()
    return None if rule in ("NO ACTION", "RESTRICT", "") else rule
