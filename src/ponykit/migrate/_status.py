"""status: which revisions are applied, pending or partial, the heads, and where the database is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pony.orm import Database

from ._connect import open_connection
from ._history import History, load_history
from ._versions import VersionRow, read_rows

__all__ = ["Status", "compute_status", "status"]


@dataclass(frozen=True)
class Status:
    """The migration state of a database against a migrations directory.

    ``applied``/``pending`` are revision ids in order (a partial or reverting revision is pending too);
    ``partial`` maps a partially applied revision (MariaDB) to its steps done; ``reverting`` maps a
    revision whose downgrade stopped half way (MariaDB) to its steps undone (run downgrade to finish it);
    ``unknown`` lists revisions the database has but the directory does not; ``current`` is the latest
    applied revision (None before the first).
    """

    applied: list[str]
    pending: list[str]
    partial: dict[str, int]
    heads: list[str]
    current: str | None
    unknown: list[str] = field(default_factory=list)
    messages: dict[str, str] = field(default_factory=dict)
    reverting: dict[str, int] = field(default_factory=dict)

    @property
    def up_to_date(self) -> bool:
        """Nothing pending, partial or reverting, one head at most, no unknown revisions."""
        return (
            not self.pending
            and not self.partial
            and not self.reverting
            and len(self.heads) <= 1
            and not self.unknown
        )

    def lines(self) -> list[str]:
        """A human listing: one line per revision, then the heads."""
        out = []
        for rev in self.applied:
            out.append(f"applied  {rev} {self.messages.get(rev, '')}".rstrip())
        for rev in self.pending:
            if rev in self.reverting:
                out.append(
                    f"reverting {rev} {self.messages.get(rev, '')} ({self.reverting[rev]} steps undone by a "
                    "downgrade that stopped: run downgrade to finish)"
                )
            elif rev in self.partial:
                out.append(f"partial  {rev} {self.messages.get(rev, '')} ({self.partial[rev]} steps done)")
            else:
                out.append(f"pending  {rev} {self.messages.get(rev, '')}".rstrip())
        for rev in self.unknown:
            out.append(f"unknown  {rev} (in the database, not in the migrations directory)")
        out.append(f"heads: {', '.join(self.heads) or 'none'}; current: {self.current or 'none'}")
        return out


def compute_status(history: History, rows: dict[str, VersionRow]) -> Status:
    """The status from a history and the version table's rows."""
    applied = [r for r in history.order if r in rows and rows[r].status == "applied"]
    partial = {r: rows[r].steps_done for r in history.order if r in rows and rows[r].status == "partial"}
    reverting = {r: rows[r].steps_done for r in history.order if r in rows and rows[r].status == "reverting"}
    pending = [r for r in history.order if r not in applied]
    unknown = sorted(set(rows) - set(history.order))
    return Status(
        applied=applied,
        pending=pending,
        partial=partial,
        heads=history.heads,
        current=applied[-1] if applied else None,
        unknown=unknown,
        messages={r: history.message(r) for r in history.order},
        reverting=reverting,
    )


def status(db: Database, *, directory: str | Path = "migrations") -> Status:
    """The migration state of ``db``'s database (reads the version table; takes no lock)."""
    history = load_history(directory)
    con = open_connection(db)
    try:
        rows = read_rows(con)
    finally:
        con.close()
    return compute_status(history, rows)
