"""The migration graph as the runner reads it: revisions in order, parents, heads, checksums, operations,
the snapshot before and after each revision, and revision names resolved from what a user typed.

One place that reads ``_files.Graph``, so the rest of the runner does not depend on its shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import MigrationStateError

__all__ = [
    "History",
    "load_history",
]


class History:
    """The revisions of a migrations directory, and the snapshots their operations lead to."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.graph: Any = None
        if self.directory.exists():
            from . import _files

            self.graph = _files.load(self.directory)
        self._after: dict[str, dict[str, Any]] = {}

    # -- the graph -------------------------------------------------------------------------------------
    @property
    def order(self) -> list[str]:
        """Every revision, parents before children."""
        if self.graph is None:
            return []
        return list(self.graph.order)

    def parents(self, rev: str) -> tuple[str, ...]:
        """The revisions ``rev`` follows (``down_revision``)."""
        return tuple(self.graph.parents(rev))

    @property
    def heads(self) -> list[str]:
        """Revisions no other revision follows."""
        return [] if self.graph is None else list(self.graph.heads)

    def checksum(self, rev: str) -> str:
        """sha256 (hex) of the revision's file as it is on disk now."""
        return str(self.graph[rev].checksum)

    def operations(self, rev: str) -> list[Any]:
        """The revision's ``operations`` list."""
        return list(self.graph[rev].operations)

    def message(self, rev: str) -> str:
        """The first line of the file's docstring."""
        return str(self.graph[rev].message)

    def path(self, rev: str) -> Path:
        """The revision's file."""
        return Path(self.graph[rev].path)

    def ancestors(self, rev: str) -> list[str]:
        """``rev`` and every revision it follows, parents first."""
        seen: set[str] = set()
        stack = [rev]
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self.parents(current))
        return [r for r in self.order if r in seen]

    def resolve(self, text: str) -> str:
        """A revision id from an id or a unique prefix of one (``0002``, ``0002_ab12cd``)."""
        if text in self.order:
            return text
        matches = [r for r in self.order if r.startswith(text)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise MigrationStateError(
                f"no revision {text!r} in {self.directory} (revisions: {', '.join(self.order) or 'none'})"
            )
        raise MigrationStateError(f"revision {text!r} is ambiguous: {', '.join(matches)}")

    def single_head(self) -> str | None:
        """The one head, None without revisions; MigrationStateError when there are several."""
        heads = self.heads
        if len(heads) > 1:
            raise MigrationStateError(
                f"several heads in {self.directory}: {', '.join(heads)}; merge them with a migration whose "
                "down_revision names both (make --empty), or upgrade to each with --to REV"
            )
        return heads[0] if heads else None

    # -- snapshots -------------------------------------------------------------------------------------
    def after(self, rev: str | None) -> dict[str, Any]:
        """The snapshot once ``rev`` is applied (the empty snapshot for None)."""
        from . import _files
        from ._ops_base import empty_snapshot

        if rev is None:
            return empty_snapshot()
        if rev not in self._after:
            replayed: dict[str, Any] = _files.replay(self.graph, rev)
            self._after[rev] = replayed
        return self._after[rev]

    def before(self, rev: str) -> dict[str, Any]:
        """The snapshot the revision's operations start from."""
        parents = self.parents(rev)
        if len(parents) == 1:
            return self.after(parents[0])
        if not parents:
            return self.after(None)
        # A merge: the state that includes every branch, with this revision's own operations taken back.
        snap = self.after(rev)
        for operation in reversed(self.operations(rev)):
            snap = operation.backwards(snap)
        return snap


def load_history(directory: str | Path) -> History:
    """The history of ``directory`` (empty when it does not exist)."""
    return History(directory)
