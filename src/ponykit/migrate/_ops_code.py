"""Operations that run code instead of changing the schema: RunPython and RunSQL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ponykit.errors import MigrationError
from ponykit.migrate._ops_base import Operation
from ponykit.migrate._render import literal

__all__ = ["RunPython", "RunSQL", "noop"]


def noop(db: Any) -> None:
    """A RunPython step that does nothing (``reverse=op.noop`` makes a data migration reversible)."""


def _callable_source(fn: Callable[..., Any], src: Any) -> str:
    if fn is noop:
        return "op.noop"
    module = getattr(fn, "__module__", "") or ""
    name = getattr(fn, "__qualname__", getattr(fn, "__name__", ""))
    # functions defined in the migration file itself are written by name; others are imported
    if module.startswith("ponykit_migration_") or module in ("__main__", "builtins") or "<" in name:
        return str(getattr(fn, "__name__", name))
    return str(src.reference(f"{module}.{name}"))


@dataclass(frozen=True, eq=True)
class RunPython(Operation):
    """``fn(db)`` on the historical Database of this point, in the migration's transaction."""

    fn: Callable[[Any], Any]
    reverse: Callable[[Any], Any] | None = None

    @property
    def reversible(self) -> bool:  # type: ignore[override]
        """Reversible when a ``reverse`` function is given (``op.noop`` counts)."""
        return self.reverse is not None

    def run(self, db: Any) -> None:
        """Run the forward function."""
        self.fn(db)

    def run_reverse(self, db: Any) -> None:
        """Run the reverse function, or raise when there is none."""
        if self.reverse is None:
            raise MigrationError(f"irreversible operation: {self.describe()} has no reverse=")
        self.reverse(db)

    def source(self, src: Any) -> str:
        extra = "" if self.reverse is None else f", reverse={_callable_source(self.reverse, src)}"
        return f"op.RunPython({_callable_source(self.fn, src)}{extra})"

    def describe(self) -> str:
        return f"run Python {getattr(self.fn, '__name__', self.fn)!s}"


def _per_dialect(sql: Any) -> Any:
    return dict(sorted(sql.items())) if isinstance(sql, dict) else sql


@dataclass(frozen=True, eq=True)
class RunSQL(Operation):
    """Raw SQL: one string for every dialect, or ``{"postgres": ..., "mysql": ..., "sqlite": ...}``
    (dialects not named skip it)."""

    sql: Any
    reverse: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sql", _per_dialect(self.sql))
        object.__setattr__(self, "reverse", _per_dialect(self.reverse))

    @property
    def reversible(self) -> bool:  # type: ignore[override]
        """Reversible when a ``reverse`` is given."""
        return self.reverse is not None

    @staticmethod
    def _pick(sql: Any, dialect: str) -> str | None:
        if sql is None:
            return None
        if isinstance(sql, str):
            return sql
        result = sql.get(dialect)
        return None if result is None else str(result)

    def statements(self, dialect: str) -> str | None:
        """The SQL for ``dialect`` (None: skipped there)."""
        return self._pick(self.sql, dialect)

    def reverse_statements(self, dialect: str) -> str | None:
        """The reverse SQL for ``dialect``; raises if the operation is irreversible."""
        if self.reverse is None:
            raise MigrationError(f"irreversible operation: {self.describe()} has no reverse=")
        return self._pick(self.reverse, dialect)

    def source(self, src: Any) -> str:
        extra = "" if self.reverse is None else f", reverse={literal(self.reverse)}"
        return f"op.RunSQL({literal(self.sql)}{extra})"

    def describe(self) -> str:
        text = self.sql if isinstance(self.sql, str) else "; ".join(f"{k}: {v}" for k, v in self.sql.items())
        return "run SQL " + (text if len(text) <= 60 else text[:57] + "...")
