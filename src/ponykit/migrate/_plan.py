"""The physical planner: ordered DDL steps that turn the schema Pony maps for one model into another's.

``plan(before, after, hints)`` compares two :class:`~ponykit._pony.PhysicalSchema` of the same dialect
(Pony computed every name, type and DDL text in both) and, with the :class:`Hints` the entity-level
operations gave (renames, backfills, drops on purpose), returns a :class:`Plan`: :class:`Check` queries
the runner evaluates before any DDL (each must return 0) and :class:`Step` groups of statements in order.
The dialect modules (``_plan_postgres``, ``_plan_mysql``, ``_plan_sqlite``) write the SQL; the target DDL
is always Pony's own, so a migrated database equals one Pony creates fresh from the new model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .._pony import PhysicalSchema
from ._hints import Hints
from ._plan_diff import Diff, diff_schemas

__all__ = ["Check", "Plan", "Step", "plan"]


@dataclass(frozen=True)
class Step:
    """Statements that run together (MariaDB journals each step: one ``ALTER TABLE`` per step there)."""

    sql: tuple[str, ...]
    table: str | None
    description: str

    def __str__(self) -> str:
        return self.description


@dataclass(frozen=True)
class Check:
    """A query run before any DDL that must return 0; otherwise the runner raises UnsafeMigration(message)."""

    sql: str
    message: str

    def __str__(self) -> str:
        return f"check: {self.message}"


@dataclass
class Plan:
    """The checks and ordered steps from one physical schema to another, for one dialect."""

    dialect: str
    steps: list[Step] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def statements(self) -> list[str]:
        """Every statement of every step, in order (for ``sql`` output and tests)."""
        return [sql for step in self.steps for sql in step.sql]

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __str__(self) -> str:
        lines = [str(check) for check in self.checks]
        lines += [str(step) for step in self.steps]
        return "\n".join(lines) if lines else "(nothing to do)"


def plan(before: PhysicalSchema, after: PhysicalSchema, hints: Hints | None = None) -> Plan:
    """The checks and steps that migrate a database mapped as ``before`` to ``after`` (same dialect).

    Renames, backfills, lossy changes and discriminator updates come from ``hints``. A table or column that
    disappears without being listed in ``hints.dropped_tables`` / ``hints.dropped_columns`` is a bug in
    the caller (AssertionError). Same inputs give the same SQL.
    """
    if before.dialect != after.dialect:
        raise ValueError(f"both schemas must be for one dialect: {before.dialect!r} and {after.dialect!r}")
    diff: Diff = diff_schemas(before, after, hints or Hints())
    result = Plan(dialect=after.dialect, checks=[Check(sql, message) for sql, message in diff.checks()])
    if after.dialect == "postgres":
        from . import _plan_postgres as dialect_module
    elif after.dialect == "mysql":
        from . import _plan_mysql as dialect_module  # type: ignore[no-redef]
    elif after.dialect == "sqlite":
        from . import _plan_sqlite as dialect_module  # type: ignore[no-redef]
    else:
        raise ValueError(f"unknown dialect {after.dialect!r}")
    for sql, table, description in dialect_module.steps(diff):
        result.steps.append(Step(tuple(sql), table, description))
    return result
