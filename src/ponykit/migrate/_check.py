"""check: is everything in sync? For CI, with one exit code per kind of problem.

| code | problem |
|---|---|
| 0 | in sync |
| 1 | the models differ from ``schema.lock.json`` (run make) |
| 2 | revisions pending or partial in the database, or several heads |
| 3 | the live database drifted from the schema the applied revisions give (each difference named) |
| 4 | a migration file was edited after it was applied (checksum), or replaying the files != the lock |

When several problems are found every one is listed, and the exit code is the **lowest** of their codes:
the codes follow the order in which a developer fixes things (make, then upgrade, then look at the
database, then at the history), and the lowest is the next thing to do. ``exit_code`` is 0 only when no
problem was found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pony.orm import Database

from ._connect import open_connection
from ._history import History, load_history
from ._status import compute_status
from ._versions import read_rows

__all__ = ["CheckReport", "check"]


@dataclass
class CheckReport:
    """What :func:`check` found: ``problems`` (one line each, prefixed by its code) and their ``codes``."""

    problems: list[str] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)

    def add(self, code: int, text: str) -> None:
        """Record one problem."""
        self.problems.append(f"[{code}] {text}")
        self.codes.append(code)

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems

    @property
    def exit_code(self) -> int:
        """0 in sync, else the lowest code among the problems (see the module's table)."""
        return min(self.codes) if self.codes else 0

    def to_dict(self) -> dict[str, Any]:
        """For ``--format json``."""
        return {"ok": self.ok, "exit_code": self.exit_code, "problems": self.problems, "codes": self.codes}


def _models_vs_lock(db: Database, lock: dict[str, Any] | None, report: CheckReport) -> None:
    from ._snapshot import snapshot, snapshot_hash

    if lock is None:
        report.add(1, "no schema.lock.json in the migrations directory: run make (or init) first")
        return
    current = snapshot(db)
    if snapshot_hash(current) != snapshot_hash(lock["snapshot"]):
        entities = set(current.get("entities", {})) ^ set(lock["snapshot"].get("entities", {}))
        changed = sorted(
            name
            for name, spec in current.get("entities", {}).items()
            if name in lock["snapshot"].get("entities", {}) and spec != lock["snapshot"]["entities"][name]
        )
        detail = ", ".join(sorted(entities) + changed)
        report.add(1, f"the models differ from schema.lock.json ({detail or 'details'}): run make")


def _history_vs_lock(history: History, lock: dict[str, Any] | None, report: CheckReport) -> None:
    from ._snapshot import snapshot_hash

    heads = history.heads
    if len(heads) > 1:
        report.add(2, f"several heads: {', '.join(heads)}; merge them (make --empty) before deploying")
        return
    if lock is None or not heads:
        return
    replayed = history.after(heads[0])
    if snapshot_hash(replayed) != snapshot_hash(lock["snapshot"]):
        report.add(
            4,
            f"replaying the migrations up to {heads[0]} does not give schema.lock.json: a migration file "
            "was edited by hand, or the lock was; restore them or run make",
        )
    if lock.get("head") not in (None, heads[0]):
        report.add(4, f"schema.lock.json names head {lock.get('head')} but the files' head is {heads[0]}")


def check(db: Database, *, directory: str | Path = "migrations", against_db: bool = True) -> CheckReport:
    """Compare the models, the migration files, the lock and (``against_db``) the database."""
    from ._files import read_lock

    report = CheckReport()
    history = load_history(directory)
    lock = read_lock(Path(directory)) if Path(directory).exists() else None
    _models_vs_lock(db, lock, report)
    _history_vs_lock(history, lock, report)
    if not against_db:
        return report
    con = open_connection(db)
    try:
        rows = read_rows(con)
        state = compute_status(history, rows)
        for rev in state.pending:
            if rev in state.reverting:
                report.add(
                    2, f"revision {rev} is half reverted ({state.reverting[rev]} steps undone): run downgrade"
                )
            elif rev in state.partial:
                report.add(2, f"revision {rev} is partial ({state.partial[rev]} steps done): run upgrade")
            else:
                report.add(2, f"revision {rev} is not applied: run upgrade")
        for rev in state.unknown:
            report.add(2, f"revision {rev} is applied in the database but not in {directory}")
        for rev in state.applied:
            if rows[rev].checksum != history.checksum(rev):
                report.add(
                    4,
                    f"migration file {history.path(rev).name} was edited after revision {rev} was applied "
                    "(checksum differs from the version table): restore it; add a new migration instead",
                )
        expected = _expected_snapshot(history, state.applied)
        if expected is not None and not state.partial and not state.reverting:
            _drift(con, expected, report)
    finally:
        con.close()
    return report


def _expected_snapshot(history: History, applied: list[str]) -> dict[str, Any] | None:
    """The snapshot the applied revisions give, when they are exactly the ancestors of one of them."""
    if not applied:
        return history.after(None)
    for rev in reversed(applied):
        if set(history.ancestors(rev)) == set(applied):
            return history.after(rev)
    return None


def _drift(con: Any, expected: dict[str, Any], report: CheckReport) -> None:
    from ._compare import compare
    from ._execute import server_version
    from ._introspect import introspect
    from ._models import build

    wanted = build(expected, con.dialect, server_version(con)).schema
    actual = introspect(con.connection, con.dialect)
    for difference in compare(wanted, actual):
        report.add(3, f"the database drifted: {difference}")
