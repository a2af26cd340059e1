"""The migration history: revisions loaded from a directory, their parents and children, and replay.

A merge revision (``down_revision`` a tuple) starts from its parents' snapshots merged entity by entity
against their latest common ancestor: an entity changed (or added, or dropped) on one branch only takes
that branch's definition; changed on several branches, the definitions must be equal; otherwise the
replay raises MigrationStateError naming the entity (the merge migration must then be written by hand
from a history without the conflict).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ponykit.errors import MigrationStateError

__all__ = ["Graph", "Migration", "replay"]


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    revision: str
    parents: tuple[str, ...]
    path: Path
    module: ModuleType = field(repr=False, compare=False)
    checksum: str
    schema_hash: str | None
    message: str
    operations: tuple[Any, ...] = field(repr=False)


class Graph:
    """The revisions of a directory as a DAG, in topological order (ties by file name)."""

    def __init__(self, migrations: list[Migration]) -> None:
        self.migrations: dict[str, Migration] = {}
        for migration in migrations:
            if migration.revision in self.migrations:
                other = self.migrations[migration.revision].path.name
                raise MigrationStateError(
                    f"revision {migration.revision!r} is declared by two files: {other} and "
                    f"{migration.path.name}; give one of them a new revision"
                )
            self.migrations[migration.revision] = migration
        self.children: dict[str, list[str]] = {rev: [] for rev in self.migrations}
        for migration in self.migrations.values():
            for parent in migration.parents:
                if parent not in self.migrations:
                    raise MigrationStateError(
                        f"{migration.path.name}: down_revision {parent!r} is not a revision of this directory"
                    )
                self.children[parent].append(migration.revision)
        self.order: list[str] = self._topological()
        self._snapshots: dict[str, dict[str, Any]] = {}

    def _topological(self) -> list[str]:
        pending = {rev: len(m.parents) for rev, m in self.migrations.items()}
        ready = sorted((r for r, n in pending.items() if n == 0), key=self._file_key)
        order: list[str] = []
        while ready:
            rev = ready.pop(0)
            order.append(rev)
            for child in self.children[rev]:
                pending[child] -= 1
                if pending[child] == 0:
                    ready.append(child)
                    ready.sort(key=self._file_key)
        if len(order) != len(self.migrations):
            stuck = sorted(r for r in self.migrations if r not in order)
            raise MigrationStateError(f"the revisions {', '.join(stuck)} form a cycle through down_revision")
        return order

    def _file_key(self, rev: str) -> str:
        return self.migrations[rev].path.name

    def __iter__(self) -> Any:
        return (self.migrations[rev] for rev in self.order)

    def __len__(self) -> int:
        return len(self.migrations)

    def __contains__(self, rev: object) -> bool:
        return rev in self.migrations

    def __getitem__(self, rev: str) -> Migration:
        try:
            return self.migrations[rev]
        except KeyError:
            known = ", ".join(self.order[-5:]) or "none"
            raise MigrationStateError(f"unknown revision {rev!r} (latest: {known})") from None

    @property
    def revisions(self) -> list[str]:
        """Every revision, parents before children."""
        return list(self.order)

    def parents(self, rev: str) -> tuple[str, ...]:
        """The revisions ``rev`` follows."""
        return self[rev].parents

    @property
    def heads(self) -> list[str]:
        """Revisions without children (one in a healthy history)."""
        return [rev for rev in self.order if not self.children[rev]]

    @property
    def roots(self) -> list[str]:
        """Revisions without parents."""
        return [rev for rev in self.order if not self.migrations[rev].parents]

    def ancestors(self, rev: str) -> set[str]:
        """``rev`` and every revision before it."""
        seen, todo = set(), [rev]
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo += self[current].parents
        return seen

    def snapshot(self, rev: str | None) -> dict[str, Any]:
        """The snapshot after ``rev`` (None: before the first migration); see :func:`replay`."""
        return replay(self, rev)


def _empty() -> dict[str, Any]:
    return {"format": 1, "entities": {}}


def _merge(graph: Graph, rev: str, parents: tuple[str, ...]) -> dict[str, Any]:
    common = set.intersection(*(graph.ancestors(p) for p in parents))
    base_rev = next((r for r in reversed(graph.order) if r in common), None)
    base = replay(graph, base_rev)
    snaps = [replay(graph, p) for p in parents]
    names = set(base["entities"]).union(*(s["entities"] for s in snaps))
    merged = _empty()
    for name in sorted(names):
        was = base["entities"].get(name)
        versions = [s["entities"].get(name) for s in snaps]
        changed = [v for v in versions if v != was]
        if not changed:
            result = was
        elif all(v == changed[0] for v in changed):
            result = changed[0]
        else:
            raise MigrationStateError(
                f"merge revision {rev}: its parents {', '.join(parents)} changed entity {name} in different "
                "ways; write the merge by hand on one branch first (the other branch's change as operations)"
            )
        if result is not None:
            merged["entities"][name] = copy.deepcopy(result)
    return merged


def replay(graph: Graph, rev: str | None) -> dict[str, Any]:
    """The snapshot after revision ``rev``, applying every operation from the root (cached per graph)."""
    if rev is None:
        return _empty()
    cached = graph._snapshots.get(rev)
    if cached is not None:
        return copy.deepcopy(cached)
    migration = graph[rev]
    if not migration.parents:
        snap = _empty()
    elif len(migration.parents) == 1:
        snap = replay(graph, migration.parents[0])
    else:
        snap = _merge(graph, rev, migration.parents)
    for number, operation in enumerate(migration.operations, 1):
        try:
            snap = operation.forwards(snap)
        except Exception as exc:
            raise MigrationStateError(
                f"{migration.path.name}: operation {number} ({operation.describe()}) does not apply to the "
                f"snapshot of its parents: {exc}"
            ) from exc
    graph._snapshots[rev] = snap
    return copy.deepcopy(snap)
