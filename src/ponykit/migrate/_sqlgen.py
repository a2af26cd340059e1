"""sql: the DDL of a range of revisions for a dialect, offline (no server), for review or a DBA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pony.orm import Database

from .. import _pony
from ..errors import MigrationError
from ._history import load_history
from ._units import plan_units

__all__ = ["sql"]


def sql(
    db: Database | None,
    *,
    dialect: str | None = None,
    from_rev: str | None = None,
    to_rev: str = "head",
    directory: str | Path = "migrations",
    server_version: Any = None,
) -> str:
    """The SQL ``upgrade`` would run from ``from_rev`` (excluded; None: an empty database) to ``to_rev``
    for ``dialect`` (default: the dialect ``db`` is bound to). RunPython steps appear as comments; the
    checks a step runs first appear as comments too. PostgreSQL and SQLite revisions are wrapped in
    ``BEGIN``/``COMMIT``."""
    if dialect is None:
        if db is None or not _pony.is_bound(db):
            raise MigrationError("sql: give dialect= (sqlite, postgres or mysql) or a bound Database")
        dialect = _pony.dialect(db)
    if dialect not in _pony.DIALECTS:
        raise MigrationError(f"sql: unknown dialect {dialect!r}; expected one of {', '.join(_pony.DIALECTS)}")
    history = load_history(directory)
    head = history.single_head() if to_rev == "head" else history.resolve(to_rev)
    if head is None:
        return ""
    wanted = history.ancestors(head)
    if from_rev is not None:
        done = set(history.ancestors(history.resolve(from_rev)))
        wanted = [r for r in wanted if r not in done]
    out: list[str] = []
    for rev in wanted:
        units = plan_units(
            history.operations(rev), history.before(rev), dialect, server_version=server_version, revision=rev
        )
        out.append(f"-- {rev} {history.message(rev)}".rstrip())
        if dialect != "mysql":
            out.append("BEGIN;")
        for unit in units:
            for check in unit.checks:
                out.append(f"-- check (must find nothing): {check.sql}  -- {check.message}")
            if unit.kind == "python":
                out.append(f"-- {unit.description}: Python code, not expressible in SQL")
                continue
            out.append(f"-- {unit.description}")
            out.extend(statement.rstrip(";") + ";" for statement in unit.statements)
        if dialect != "mysql":
            out.append("COMMIT;")
        out.append("")
    return "\n".join(out)
