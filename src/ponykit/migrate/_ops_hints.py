"""From entity-level operations to physical hints.

A migration's operations are mapped only at its two ends (``before`` and ``after``, each a ``Mapped``), but
each operation speaks the names of its own point in the migration: ``RenameAttr("Human", "name", ...)``
after ``RenameEntity("Person", "Human")``. :func:`collect_hints` follows every entity and attribute through
the operations and hands each operation two :class:`NameView` s that translate its names to the names of
either end, so ``op.hints(before, after, hints)`` asks about Person in ``before`` and Human in ``after``.
Something that does not exist at an end (added or dropped inside the migration) raises ``KeyError`` in the
view; :func:`safe` turns that into None.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ponykit.errors import MigrationError
from ponykit.migrate._hints import Hints

__all__ = ["NameView", "collect_hints", "discriminator_change", "entity_rename_facts", "rename_facts", "safe"]


def safe(method: Callable[..., Any], *args: str) -> Any:
    """``method(*args)``, or None when a name does not exist at that end of the migration."""
    try:
        return method(*args)
    except (LookupError, AttributeError):
        return None


_Point = tuple[dict[str, object], dict[tuple[object, str], object]]
_End = tuple[dict[object, str], dict[object, str]]


class NameView:
    """A ``Mapped`` seen through the names of one point of a migration (translated when asked)."""

    def __init__(self, mapped: Any, snapshot: dict[str, Any], point: _Point, end: _End) -> None:
        self.mapped = mapped
        #: the snapshot at the operation's point (before it for ``before``, after it for ``after``)
        self.snapshot = snapshot
        self._point = point
        self._end = end

    def _entity(self, entity: str) -> str:
        name = self._end[0].get(self._point[0].get(entity))
        if name is None:
            raise KeyError(entity)
        return name

    def _attr(self, entity: str, attr: str) -> tuple[str, str]:
        eid = self._point[0].get(entity)
        owner = self._end[0].get(eid)
        name = self._end[1].get(self._point[1].get((eid, attr)))
        if owner is None or name is None:
            raise KeyError(f"{entity}.{attr}")
        return owner, name

    def entity_table(self, entity: str) -> str:
        """The table of ``entity`` at this end."""
        return str(self.mapped.entity_table(self._entity(entity)))

    def attr_columns(self, entity: str, attr: str) -> tuple[str, ...]:
        """The columns of ``entity.attr`` at this end."""
        return tuple(self.mapped.attr_columns(*self._attr(entity, attr)))

    def link_table(self, entity: str, attr: str) -> str | None:
        """The m2m table of ``entity.attr`` at this end."""
        result = self.mapped.link_table(*self._attr(entity, attr))
        return None if result is None else str(result)

    def link_columns(self, entity: str, attr: str) -> tuple[str, ...]:
        """The link columns of ``entity.attr`` at this end."""
        return tuple(self.mapped.link_columns(*self._attr(entity, attr)))

    def discriminator(self, entity: str) -> tuple[str, str, Any] | None:
        """(table, column, value) of ``entity``'s discriminator at this end."""
        result = self.mapped.discriminator(self._entity(entity))
        return None if result is None else (str(result[0]), str(result[1]), result[2])


class _Ids:
    """Identities of entities and attributes through renames (an id outlives its names)."""

    def __init__(self, snap: dict[str, Any]) -> None:
        self.entities: dict[str, object] = {n: ("E", n) for n in snap["entities"]}
        self.attrs: dict[tuple[object, str], object] = {
            (("E", n), a["name"]): ("A", n, a["name"])
            for n, e in snap["entities"].items()
            for a in e["attrs"]
        }

    def copy(self) -> _Point:
        return dict(self.entities), dict(self.attrs)

    def step(self, operation: Any) -> None:
        kind = type(operation).__name__
        if kind == "RenameEntity":
            self.entities[operation.new] = self.entities.pop(operation.old, object())
        elif kind == "AddEntity":
            self.entities[operation.name] = object()
        elif kind == "DropEntity":
            self.entities.pop(operation.name, None)
        elif kind in ("RenameAttr", "AddAttr", "DropAttr"):
            owner = self.entities.get(operation.entity)
            if kind == "RenameAttr":
                self.attrs[(owner, operation.new)] = self.attrs.pop((owner, operation.old), object())
            elif kind == "AddAttr":
                self.attrs[(owner, operation.name)] = object()
            else:
                self.attrs.pop((owner, operation.name), None)


def _inverse(point: _Point) -> _End:
    entity_ids, attr_ids = point
    return {eid: name for name, eid in entity_ids.items()}, {aid: name for (_, name), aid in attr_ids.items()}


def collect_hints(operations: Iterable[Any], snapshot: dict[str, Any], before: Any, after: Any) -> Hints:
    """The hints of a migration's operations; ``snapshot`` is the snapshot ``before`` was mapped from."""
    ops = list(operations)
    ids = _Ids(snapshot)
    start = ids.copy()
    points = []
    snap = snapshot
    for operation in ops:
        point_before = ids.copy()
        after_snap = operation.forwards(snap)
        ids.step(operation)
        points.append((operation, snap, point_before, after_snap, ids.copy()))
        snap = after_snap
    start_end = _inverse(start)
    final_end = _inverse(ids.copy())
    hints = Hints()
    for operation, snap_before, point_before, snap_after, point_after in points:
        operation.hints(
            NameView(before, snap_before, point_before, start_end),
            NameView(after, snap_after, point_after, final_end),
            hints,
        )
    return hints


def discriminator_change(before: Any, after: Any, old: str, new: str, hints: Hints) -> None:
    """An UPDATE of the discriminator column when ``old``'s value differs from ``new``'s."""
    was = safe(before.discriminator, old)
    now = safe(after.discriminator, new)
    if was is not None and now is not None and was[2] != now[2]:
        update = (now[0], now[1], was[2], now[2])
        if update not in hints.discriminator_updates:
            hints.discriminator_updates.append(update)


def rename_facts(before: Any, after: Any, rename_entity: dict[str, str], hints: Hints) -> None:
    """Table and column renames of every entity and attribute that exists at both ends.

    Names in ``after.snapshot``; ``rename_entity`` maps an after-name to the before-name where they differ
    (the operation's own rename). Whatever columns a tracked attribute had before and has after are the
    same data, so a difference is a rename: derived names (link tables named after entities, link columns,
    columns of a renamed attribute) all come out of this one comparison.
    """
    snapshot = getattr(after, "snapshot", None)
    if snapshot is None:
        raise MigrationError(
            "an operation's hints need the names of its point in the migration: call "
            "op.collect_hints(operations, snapshot_before, mapped_before, mapped_after), not op.hints(...)"
        )
    for name, entity in snapshot["entities"].items():
        old_name = rename_entity.get(name, name)
        table0 = safe(before.entity_table, old_name)
        table1 = safe(after.entity_table, name)
        if table0 is None or table1 is None:
            continue
        if table0 != table1 and not entity["bases"]:
            hints.table_renames[table0] = table1
        for spec in entity["attrs"]:
            attr = spec["name"]
            old_attr = rename_entity.get(f"{name}.{attr}", attr)
            cols0 = safe(before.attr_columns, old_name, old_attr) or ()
            cols1 = safe(after.attr_columns, name, attr) or ()
            if len(cols0) == len(cols1):
                for col0, col1 in zip(cols0, cols1, strict=True):
                    if col0 != col1:
                        hints.column_renames[(table1, col0)] = col1
            link0 = safe(before.link_table, old_name, old_attr)
            link1 = safe(after.link_table, name, attr)
            if link0 is None or link1 is None:
                continue
            if link0 != link1:
                hints.table_renames[link0] = link1
            lcols0 = safe(before.link_columns, old_name, old_attr) or ()
            lcols1 = safe(after.link_columns, name, attr) or ()
            if len(lcols0) == len(lcols1):
                for col0, col1 in zip(lcols0, lcols1, strict=True):
                    if col0 != col1:
                        hints.column_renames[(link1, col0)] = col1


def entity_rename_facts(before: Any, after: Any, old: str, new: str, hints: Hints) -> None:
    """What renaming entity ``old`` to ``new`` changes physically."""
    rename_facts(before, after, {new: old}, hints)
    discriminator_change(before, after, old, new, hints)
