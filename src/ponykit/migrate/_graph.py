"""The migration history: revisions loaded from a directory, their parents and children, and replay.

A merge revision (``down_revision`` a tuple) starts from its parents' snapshots merged three ways against
their latest common ancestor, entity by entity: what only one branch changed (added, dropped) is taken from
that branch; an entity several branches changed is merged setting by setting and attribute by attribute
(by name; new attributes in branch order), each by the same rule; two different changes of one setting
or attribute are a conflict, and replay raises MigrationStateError naming the entity.
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


class _Conflict(Exception):
    """Two branches changed one thing in different ways."""


def _three_way(was: Any, versions: list[Any]) -> Any:
    changed = [v for v in versions if v != was]
    if not changed:
        return was
    if all(v == changed[0] for v in changed):
        return changed[0]
    raise _Conflict


def _merge_attrs(was: list[dict[str, Any]], versions: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Attributes merged one by one (by name); the order is the first branch's, then the others' new ones."""
    by_name = [{a["name"]: a for a in v} for v in versions]
    base = {a["name"]: a for a in was}
    order: list[str] = []
    for version in versions:
        order += [a["name"] for a in version if a["name"] not in order]
    order += [name for name in base if name not in order]
    result = []
    for name in order:
        merged = _three_way(base.get(name), [v.get(name) for v in by_name])
        if merged is not None:
            result.append(merged)
    return result


def _merge_entity(was: Any, versions: list[Any]) -> Any:
    try:
        return _three_way(was, versions)
    except _Conflict:
        if was is None or any(v is None for v in versions):
            raise
    # changed on several branches: merge field by field, attributes one by one
    result = {}
    for key in was:
        if key == "attrs":
            result[key] = _merge_attrs(was[key], [v[key] for v in versions])
        else:
            result[key] = _three_way(was[key], [v[key] for v in versions])
    return result


def _merge(graph: Graph, rev: str, parents: tuple[str, ...]) -> dict[str, Any]:
    common = set.intersection(*(graph.ancestors(p) for p in parents))
    base_rev = next((r for r in reversed(graph.order) if r in common), None)
    base = replay(graph, base_rev)
    snaps = [replay(graph, p) for p in parents]
    names = set(base["entities"]).union(*(s["entities"] for s in snaps))
    merged = _empty()
    for name in sorted(names):
        try:
            result = _merge_entity(base["entities"].get(name), [s["entities"].get(name) for s in snaps])
        except _Conflict:
            raise MigrationStateError(
                f"merge revision {rev}: its parents {', '.join(parents)} changed entity {name} in "
                "conflicting ways (the same attribute or setting differently, or one dropped what another "
                "changed); rebase one branch on the other instead of merging"
            ) from None
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
