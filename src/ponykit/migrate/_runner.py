"""upgrade and downgrade: apply revisions under the migration lock, journaled in the version table.

PostgreSQL and SQLite run each revision in one transaction (SQLite: ``PRAGMA foreign_keys=OFF`` before
``BEGIN IMMEDIATE``, ``PRAGMA foreign_key_check`` before ``COMMIT``, the setting restored after), so a
failure leaves nothing behind. MariaDB cannot roll DDL back: the runner runs unit by unit, committing
``steps_done`` after each (status ``partial`` until the last), and resumes there on the next run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pony.orm import Database

from ..errors import MigrationError, MigrationStateError, UnsafeMigration
from ._connect import MigrationConnection, open_connection
from ._execute import run_unit, server_version, set_timeouts
from ._history import History, load_history
from ._lock import migration_lock, sqlite_begin
from ._units import Unit, plan_units
from ._versions import VersionRow, delete_row, ensure_table, read_rows, set_progress, write_row

__all__ = ["Progress", "downgrade", "upgrade"]

Progress = Callable[[str], None]


def _say(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text)


def _targets_up(history: History, target: str) -> list[str]:
    if target == "heads":
        wanted: set[str] = set()
        for head in history.heads:
            wanted.update(history.ancestors(head))
        return [r for r in history.order if r in wanted]
    if target == "head":
        single = history.single_head()
        return [] if single is None else history.ancestors(single)
    return history.ancestors(history.resolve(target))


def _fk_problems(con: MigrationConnection) -> list[tuple[Any, ...]]:
    return con.rows("PRAGMA foreign_key_check")


class _Run:
    """One upgrade or downgrade on one connection."""

    def __init__(self, con: MigrationConnection, history: History, progress: Progress | None) -> None:
        self.con = con
        self.history = history
        self.progress = progress
        self.version = server_version(con)

    def units(self, rev: str, backwards: bool) -> list[Unit]:
        return plan_units(
            self.history.operations(rev),
            self.history.before(rev),
            self.con.dialect,
            server_version=self.version,
            backwards=backwards,
            revision=rev,
        )

    def label(self, rev: str) -> str:
        message = self.history.message(rev)
        return f"{rev} {message}".strip()

    # -- one revision, per backend ----------------------------------------------------------------------
    def apply(self, rev: str, backwards: bool) -> bool:
        """Apply (or undo) ``rev``; False when another runner did it meanwhile."""
        con = self.con
        started = time.monotonic()
        units = self.units(rev, backwards)
        verb = "Reverting" if backwards else "Applying"
        try:
            if con.dialect == "mysql":
                done = self._apply_stepwise(rev, units, backwards, started, verb)
            else:
                done = self._apply_atomic(rev, units, backwards, started, verb)
        except MigrationError as exc:
            lost = _lost_connection(con, exc)
            if lost is None:
                raise
            raise type(exc)(f"{exc}. Cause: {lost}") from exc
        except Exception as exc:
            # Outside a unit: BEGIN, the journal, COMMIT (a connection the server killed fails there too)
            text = " ".join(str(exc).split())
            raise MigrationError(
                f"revision {rev}: the migration connection failed between steps: {type(exc).__name__}: "
                f"{text}. Run `migrate status` to see where it stopped, then "
                f"{'downgrade' if backwards else 'upgrade'} again"
            ) from exc
        if done:
            _say(self.progress, f"done in {time.monotonic() - started:.2f} s\n")
        return done

    def _apply_atomic(self, rev: str, units: list[Unit], backwards: bool, started: float, verb: str) -> bool:
        con = self.con
        sqlite = con.dialect == "sqlite"
        foreign_keys = False
        if sqlite:
            foreign_keys = bool(con.scalar("PRAGMA foreign_keys"))
            con.execute("PRAGMA foreign_keys = OFF")
            sqlite_begin(con, 0)
        else:
            con.execute("BEGIN")
        try:
            # SQLite's lock is each migration's BEGIN IMMEDIATE: read what another runner applied while this
            # one waited for it (PostgreSQL's session lock was taken before the history was read).
            if sqlite and (rev in read_rows(con, exists=True)) != backwards:
                con.execute("ROLLBACK")
                return False
            _say(self.progress, f"{verb} {self.label(rev)} ... ")
            for index, unit in enumerate(units):
                run_unit(con, unit, rev, index, len(units))
            if sqlite:
                problems = _fk_problems(con)
                if problems:
                    table, rowid, parent, _ = problems[0]
                    raise MigrationError(
                        f"revision {rev}: foreign keys broken after the migration: table {table} row {rowid} "
                        f"refers to a missing row of {parent} ({len(problems)} problem(s)); nothing applied"
                    )
            if backwards:
                delete_row(con, rev)
            else:
                duration = int((time.monotonic() - started) * 1000)
                self._record(rev, len(units), duration)
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            if sqlite and foreign_keys:
                with contextlib.suppress(Exception):  # the failure being raised matters more
                    con.execute("PRAGMA foreign_keys = ON")
            raise
        if sqlite and foreign_keys:
            con.execute("PRAGMA foreign_keys = ON")
        return True

    def _apply_stepwise(
        self, rev: str, units: list[Unit], backwards: bool, started: float, verb: str
    ) -> bool:
        con = self.con
        rows = read_rows(con, exists=True)  # the runner made sure of the table before taking any revision
        row: VersionRow | None = rows.get(rev)
        if backwards:
            start = self._start_down(rev, row, units, verb)
        else:
            start = self._start_up(rev, row, units, verb)
        if start is None:
            return False
        for index in range(start, len(units)):
            unit = units[index]
            if unit.kind == "python":
                con.execute("BEGIN")
                try:
                    run_unit(con, unit, rev, index, len(units))
                    self._journal(rev, index + 1, backwards)
                    con.execute("COMMIT")
                except MigrationError as exc:
                    _rollback(con)  # the function's writes and its journal entry go together
                    raise type(exc)(f"{exc}. {_stopped(index, len(units), backwards)}") from exc
                except BaseException:
                    _rollback(con)
                    raise
                continue
            try:
                run_unit(con, unit, rev, index, len(units))
            except MigrationError as exc:
                if index == 0 and isinstance(exc, UnsafeMigration):
                    # a check failed before the first statement: nothing ran, not even partially
                    _quietly(lambda: self._undo_start(rev, row, backwards))
                    raise
                raise type(exc)(f"{exc}. {_stopped(index, len(units), backwards)}") from exc
            self._journal(rev, index + 1, backwards)
        if backwards:
            delete_row(con, rev)
        else:
            duration = int((time.monotonic() - started) * 1000)
            self._record(rev, len(units), duration)
        return True

    def _start_up(self, rev: str, row: VersionRow | None, units: list[Unit], verb: str) -> int | None:
        """The unit an upgrade of ``rev`` starts at (a partial one resumes); None when it is applied."""
        if row is not None and row.status == "applied":
            return None
        if row is not None and row.status == "reverting":
            raise MigrationStateError(_reverting_message(rev, row, len(units)))
        start = row.steps_done if row is not None else 0
        if start > len(units):
            raise MigrationStateError(
                f"revision {rev} is recorded with {start} steps done but plans {len(units)} now: "
                "the file changed since; restore it"
            )
        write_row(self.con, rev, self.history.parents(rev), self.history.checksum(rev), "partial", start)
        if start:
            _say(self.progress, f"Resuming {self.label(rev)} at step {start + 1}/{len(units)} ... ")
        else:
            _say(self.progress, f"{verb} {self.label(rev)} ... ")
        return start

    def _start_down(self, rev: str, row: VersionRow | None, units: list[Unit], verb: str) -> int | None:
        """The unit a downgrade of ``rev`` starts at (a reverting one resumes); None when not applied.
        The row turns ``reverting`` before the first unit, so a downgrade stopped half way is recorded."""
        if row is None:
            return None
        if row.status == "partial":
            raise MigrationStateError(
                f"revision {rev} is partially applied ({row.steps_done}/{len(units)} steps): run upgrade "
                "to finish it before downgrading"
            )
        start = row.steps_done if row.status == "reverting" else 0
        if start > len(units):
            raise MigrationStateError(
                f"revision {rev} is recorded with {start} steps undone but its downgrade plans {len(units)} "
                "now: the file changed since; restore it"
            )
        set_progress(self.con, rev, "reverting", start)
        if start:
            _say(
                self.progress,
                f"Resuming the revert of {self.label(rev)} at step {start + 1}/{len(units)} ... ",
            )
        else:
            _say(self.progress, f"{verb} {self.label(rev)} ... ")
        return start

    def _undo_start(self, rev: str, row: VersionRow | None, backwards: bool) -> None:
        """Put the row back as it was when the first unit's checks refused before any statement ran."""
        if not backwards:
            delete_row(self.con, rev)
        elif row is not None:
            set_progress(self.con, rev, row.status, row.steps_done)

    def _record(self, rev: str, steps: int, duration: int) -> None:
        history = self.history
        write_row(self.con, rev, history.parents(rev), history.checksum(rev), "applied", steps, duration)

    def _journal(self, rev: str, steps: int, backwards: bool) -> None:
        set_progress(self.con, rev, "reverting" if backwards else "partial", steps)


def _connection_closed(con: MigrationConnection) -> bool:
    if con.dialect == "postgres":
        return bool(con.connection.closed)
    if con.dialect == "mysql":
        return not con.connection.open
    return False


def _lost_connection(con: MigrationConnection, exc: BaseException) -> str | None:
    """When the migration connection died (killed by the server, the network), the first error that said
    so, for the message: what a caller sees last is often a later "connection already closed"."""
    if not _connection_closed(con):
        return None
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    first = next((e for e in reversed(chain) if type(e).__name__ == "OperationalError"), chain[-1])
    text = " ".join(str(first).split())
    return (
        f"the migration connection was lost ({type(first).__name__}: {text}); the server rolled back its "
        "open transaction and released the migration lock"
    )


def _rollback(con: MigrationConnection) -> None:
    """ROLLBACK after a failure; a connection the server killed cannot, and its error must not hide the
    failure being raised (the server rolled the transaction back when it dropped the session)."""
    with contextlib.suppress(Exception):
        con.execute("ROLLBACK")


def _quietly(action: Callable[[], None]) -> None:
    """Run a journal write while an error is being raised: its own failure (a dead connection) must not
    hide that error."""
    with contextlib.suppress(Exception):
        action()


def _stopped(index: int, total: int, backwards: bool) -> str:
    """What a failure at unit ``index`` left behind on MariaDB, and what to run."""
    what, status, command = (
        ("undone", "reverting", "downgrade") if backwards else ("applied", "partial", "upgrade")
    )
    done = (
        f"steps 1-{index} of {total} are {what} and recorded" if index else f"none of {total} steps is {what}"
    )
    return (
        f"MariaDB cannot roll back DDL: {done} (status {status}); fix the cause and run "
        f"{command} again to resume at step {index + 1}"
    )


def _reverting_message(rev: str, row: VersionRow, total: int | None = None) -> str:
    of = f"/{total}" if total is not None else ""
    return (
        f"revision {rev} is half reverted: a downgrade stopped after undoing {row.steps_done}{of} of its "
        "steps (status reverting). Fix the cause and run downgrade again to finish reverting it; then "
        "upgrade applies it anew"
    )


def _prepare(con: MigrationConnection, statement_lock_timeout: float) -> None:
    set_timeouts(con, statement_lock_timeout)
    if con.dialect == "sqlite":
        sqlite_begin(con, 0)
        try:
            ensure_table(con)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    else:
        ensure_table(con)


def upgrade(
    db: Database,
    target: str = "head",
    *,
    directory: str | Path = "migrations",
    lock_timeout: float = 60.0,
    statement_lock_timeout: float = 5.0,
    progress: Progress | None = None,
) -> list[str]:
    """Apply the revisions up to ``target`` ("head", "heads", an id or a unique prefix) that are not applied
    yet; return those this call applied (another process may have applied the rest meanwhile)."""
    history = load_history(directory)
    wanted = _targets_up(history, target)
    con = open_connection(db)
    applied: list[str] = []
    try:
        with migration_lock(con, lock_timeout):
            _prepare(con, statement_lock_timeout)
            run = _Run(con, history, progress)
            rows = read_rows(con, exists=True)
            for rev in wanted:
                if rev in rows and rows[rev].status == "reverting":
                    raise MigrationStateError(_reverting_message(rev, rows[rev]))
            for rev in wanted:
                row = rows.get(rev)
                if row is not None and row.status == "applied":
                    continue
                if run.apply(rev, backwards=False):
                    applied.append(rev)
    finally:
        con.close()
    if not applied:
        _say(progress, "up to date\n")
    return applied


def _targets_down(history: History, rows: dict[str, VersionRow], target: str) -> list[str]:
    applied = [r for r in history.order if r in rows]
    unknown = sorted(set(rows) - set(history.order))
    if unknown:
        raise MigrationStateError(
            f"the database has revisions applied that {history.directory} does not hold: {', '.join(unknown)}"
        )
    if target in ("base", "0"):
        return list(reversed(applied))
    if target.startswith("-") and target[1:].isdigit():
        return list(reversed(applied))[: int(target[1:])]
    keep = set(history.ancestors(history.resolve(target)))
    return [r for r in reversed(applied) if r not in keep]


def downgrade(
    db: Database,
    target: str = "-1",
    *,
    directory: str | Path = "migrations",
    lock_timeout: float = 60.0,
    statement_lock_timeout: float = 5.0,
    progress: Progress | None = None,
) -> list[str]:
    """Undo applied revisions: "-1" the last one ("-N" the last N), "base" all, or down to revision
    ``target`` (kept). Returns the revisions undone, last applied first."""
    history = load_history(directory)
    con = open_connection(db)
    undone: list[str] = []
    try:
        with migration_lock(con, lock_timeout):
            _prepare(con, statement_lock_timeout)
            run = _Run(con, history, progress)
            rows = read_rows(con, exists=True)
            targets = _targets_down(history, rows, target)
            for rev, row in rows.items():
                if row.status == "reverting" and rev not in targets:
                    parents = ", ".join(history.parents(rev)) or "base"
                    raise MigrationStateError(
                        f"{_reverting_message(rev, row)}. A downgrade to {target!r} would keep it: "
                        f"downgrade past it (to {parents})"
                    )
            for rev in targets:
                if run.apply(rev, backwards=True):
                    undone.append(rev)
    finally:
        con.close()
    if not undone:
        _say(progress, "nothing to downgrade\n")
    return undone
