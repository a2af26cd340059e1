"""A revision's work for one dialect, as an ordered list of units the runner executes and journals.

A revision's operations are split into groups of schema operations separated by ``RunPython``/``RunSQL``.
Each group is planned physically: the snapshots before and after the group are mapped by Pony for the
dialect (``_models.build``), each operation adds its hints, and ``_plan.plan`` gives the checks and the DDL
steps. A unit is one step (its statements run together; MariaDB journals each), one ``RunSQL`` or one
``RunPython``. The list depends only on the files and the dialect, so a partial MariaDB migration resumes
at the unit after the last one journaled.

Downgrade plans the same groups backwards: from the mapping after to the mapping before, with the hints of
the operations turned around (renames reversed, what was added now dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import MigrationError
from ._hints import Hints

__all__ = ["Unit", "is_data_op", "plan_units", "sql_of"]


@dataclass(frozen=True)
class Unit:
    """One journaled piece of a revision: ``kind`` is "ddl" (a planned step), "sql" or "python"."""

    kind: str
    description: str
    statements: tuple[str, ...] = ()
    checks: tuple[Any, ...] = ()  # _plan.Check objects run before this unit (the first of its group)
    function: Callable[[Any], Any] | None = None  # RunPython's fn (or its reverse)
    snapshot: dict[str, Any] = field(default_factory=dict)  # entities as of this point (RunPython)


def is_data_op(operation: Any) -> bool:
    """RunPython and RunSQL: they do not change the snapshot and split the schema groups."""
    return type(operation).__name__ in ("RunPython", "RunSQL")


def sql_of(spec: Any, dialect: str) -> tuple[str, ...]:
    """The statements of a RunSQL ``sql``/``reverse`` value for ``dialect`` (() when it names others)."""
    if spec is None:
        return ()
    if isinstance(spec, dict):
        spec = spec.get(dialect)
        if spec is None:
            return ()
    if isinstance(spec, str):
        return tuple(s for s in split_statements(spec) if s.strip())
    return tuple(str(s) for s in spec)


def split_statements(text: str) -> list[str]:
    """Split SQL text on semicolons outside quotes and comments (drivers run one statement per call)."""
    statements: list[str] = []
    current: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(text):
        char = text[i]
        if quote is not None:
            current.append(char)
            if char == quote:
                quote = None
        elif char in ("'", '"', "`"):
            quote = char
            current.append(char)
        elif text.startswith("--", i):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            current.append(text[i:end])
            i = end
            continue
        elif char == ";":
            statements.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        i += 1
    statements.append("".join(current).strip())
    return [s for s in statements if s]


def _groups(operations: list[Any]) -> list[list[Any]]:
    groups: list[list[Any]] = []
    for operation in operations:
        if is_data_op(operation):
            groups.append([operation])
        elif groups and not is_data_op(groups[-1][0]):
            groups[-1].append(operation)
        else:
            groups.append([operation])
    return groups


def _reverse_hints(forward: Hints, before: Any, after: Any) -> Hints:
    """The hints of going from ``after`` back to ``before``, from the forward group's hints."""
    result = Hints()
    back_tables = {new: old for old, new in forward.table_renames.items()}
    result.table_renames = dict(back_tables)
    for (new_table, old_column), new_column in forward.column_renames.items():
        old_table = back_tables.get(new_table, new_table)
        result.column_renames[(old_table, new_column)] = old_column
    result.lossy = {(back_tables.get(t, t), c) for t, c in forward.lossy}
    result.discriminator_updates = [
        (back_tables.get(t, t), c, new, old) for t, c, old, new in forward.discriminator_updates
    ]
    # What the group created is dropped on the way back (tables and columns missing before).
    old_tables = set(before.schema.tables)
    renamed_to = set(forward.table_renames.values())
    for name, table in after.schema.tables.items():
        if name not in old_tables and name not in renamed_to:
            result.dropped_tables.add(name)
            continue
        old_name = back_tables.get(name, name)
        old_table = before.schema.tables.get(old_name)
        if old_table is None:
            continue
        old_columns = {c.name for c in old_table.columns}
        renamed_columns = {new for (t, _), new in forward.column_renames.items() if t == name}
        for column in table.columns:
            if column.name not in old_columns and column.name not in renamed_columns:
                result.dropped_columns.add((name, column.name))
    return result


def _refill_dropped(group: list[Any], before: Any, hints: Hints) -> None:
    """On the way back, NOT NULL columns that come back with rows get a value: a dropped attribute its
    constant ``default=``, else its type's empty value (the values dropped are lost anyway); an altered
    ``Optional(str)`` that is NOT NULL again (no more ``unique``/``nullable``) Pony's empty value."""
    from ._ops_attr import _EMPTY, empty_value, implied_backfill
    from ._ops_base import MISSING
    from ._ops_hints import safe

    for operation in group:
        kind = type(operation).__name__
        if kind == "DropAttr" and operation.spec is not None:
            value = implied_backfill(operation.spec)
            if value is MISSING:
                value = _EMPTY.get(operation.spec["type"], MISSING)
        elif kind == "AlterAttr":
            value = empty_value(operation.old_decl)
        else:
            continue
        # None when the entity had another name at the group's start: no refill, the check speaks
        table = safe(before.entity_table, operation.entity)
        columns: tuple[str, ...] = safe(before.attr_columns, operation.entity, operation.name) or ()
        if value is MISSING or table is None or len(columns) != 1:
            continue
        hints.backfills.setdefault((table, columns[0]), value)


def plan_units(
    operations: list[Any],
    before: dict[str, Any],
    dialect: str,
    *,
    server_version: Any = None,
    backwards: bool = False,
    revision: str = "",
) -> list[Unit]:
    """The units of a revision whose ``operations`` start from snapshot ``before``, for ``dialect``."""
    planned: list[list[Unit]] = []
    snap = before
    for group in _groups(operations):
        if is_data_op(group[0]):
            planned.append([_data_unit(group[0], snap, dialect, backwards, revision)])
            continue
        after = snap
        for operation in group:
            if backwards and not getattr(operation, "reversible", True):
                raise MigrationError(
                    f"revision {revision} cannot be downgraded: operation {operation.describe()} is "
                    "irreversible (it does not carry what it removed)"
                )
            after = operation.forwards(after)
        from ._models import build  # late: only schema groups need Pony's mapping and the planner
        from ._ops_hints import collect_hints
        from ._plan import plan

        mapped_before = build(snap, dialect, server_version)
        mapped_after = build(after, dialect, server_version)
        # Each operation speaks the names of its own point in the group; collect_hints translates them to
        # the names of the group's two ends before asking each operation for its hints.
        hints = collect_hints(group, snap, mapped_before, mapped_after)
        if backwards:
            hints = _reverse_hints(hints, mapped_before, mapped_after)
            _refill_dropped(group, mapped_before, hints)
            result = plan(mapped_after.schema, mapped_before.schema, hints)
        else:
            result = plan(mapped_before.schema, mapped_after.schema, hints)
        units: list[Unit] = []
        checks = tuple(result.checks)
        for step in result.steps:
            units.append(Unit("ddl", step.description, tuple(step.sql), checks if not units else ()))
        if checks and not units:
            units.append(Unit("ddl", "checks", (), checks))
        planned.append(units)
        snap = after
    if backwards:
        planned.reverse()
    return [unit for units in planned for unit in units]


def _data_unit(operation: Any, snap: dict[str, Any], dialect: str, backwards: bool, revision: str) -> Unit:
    name = type(operation).__name__
    describe = operation.describe()
    if name == "RunSQL":
        spec = operation.reverse if backwards else operation.sql
        if backwards and spec is None:
            raise MigrationError(
                f"revision {revision} cannot be downgraded: {describe} has no reverse SQL "
                "(give reverse=..., or a reverse={} that does nothing)"
            )
        return Unit("sql", describe, sql_of(spec, dialect))
    function = operation.reverse if backwards else operation.fn
    if backwards and function is None:
        raise MigrationError(
            f"revision {revision} cannot be downgraded: {describe} has no reverse function "
            "(give reverse=..., or reverse=op.noop)"
        )
    return Unit("python", describe, (), (), function, snap)
