"""The ground the operations stand on: the base class, snapshot helpers and the name views for hints.

Operations work on snapshot dicts (the format owned by ``_snapshot.py``) and never on Pony objects: a
declaration written in a migration file (``Optional(str, 40)``) is turned into a snapshot attr dict once, in
the constructor, through the door (``ponykit._pony.attr_spec``).
"""

from __future__ import annotations

import copy
from typing import Any, Protocol

from ponykit.errors import MigrationError

__all__ = [
    "MISSING",
    "Mapping",
    "Operation",
    "attr_decl_spec",
    "empty_snapshot",
    "entity_of",
    "find_attr",
    "owned",
    "shallow",
]


class _Missing:
    """The marker for "no value given" (``None`` is a real backfill value)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "op.MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


class Mapping(Protocol):
    """What an operation asks of a mapped snapshot (``_models.Mapped``, or a view of it by name)."""

    def entity_table(self, entity: str) -> str: ...
    def attr_columns(self, entity: str, attr: str) -> tuple[str, ...]: ...
    def link_table(self, entity: str, attr: str) -> str | None: ...
    def link_columns(self, entity: str, attr: str) -> tuple[str, ...]: ...
    def discriminator(self, entity: str) -> tuple[str, str, Any] | None: ...


def empty_snapshot() -> dict[str, Any]:
    """The snapshot before the first migration."""
    return {"format": 1, "entities": {}}


def attr_decl_spec(decl: Any) -> dict[str, Any]:
    """A snapshot attr dict (without ``name``) from a Pony attribute object or an attr dict."""
    if isinstance(decl, dict):
        spec = copy.deepcopy(decl)
        spec.pop("name", None)
        spec.setdefault("args", [])
        spec.setdefault("options", {})
        for key in ("kind", "type"):
            if key not in spec:
                raise MigrationError(
                    f"attribute declaration {decl!r} has no {key!r}: expected a snapshot attr dict"
                )
        return spec
    # The door converts Pony's attribute object (its fields are Pony internals).
    from ponykit import _pony

    converter = getattr(_pony, "attr_spec", None)
    if converter is None:
        raise MigrationError("ponykit._pony.attr_spec is missing: cannot read a Pony attribute declaration")
    spec = dict(converter(decl))
    spec.pop("name", None)
    return spec


def shallow(snap: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``snap`` sharing its entity dicts (operations copy an entity before changing it)."""
    return {**snap, "entities": dict(snap.get("entities", {}))}


def entity_of(snap: dict[str, Any], name: str, what: str) -> dict[str, Any]:
    """The entity ``name`` of ``snap`` or a MigrationError saying which operation needed it."""
    entities = snap.get("entities", {})
    if name not in entities:
        known = ", ".join(sorted(entities)) or "none"
        raise MigrationError(f"{what}: entity {name!r} does not exist at this point (entities: {known})")
    result: dict[str, Any] = entities[name]
    return result


def owned(snap: dict[str, Any], name: str, what: str) -> dict[str, Any]:
    """Entity ``name`` of ``snap`` copied before a change (``forwards`` copies only what it changes)."""
    result = copy.deepcopy(entity_of(snap, name, what))
    snap["entities"][name] = result
    return result


def find_attr(entity: dict[str, Any], name: str) -> int:
    """The index of attr ``name`` in an entity's own attrs, or -1."""
    for index, spec in enumerate(entity["attrs"]):
        if spec["name"] == name:
            return index
    return -1


class Operation:
    """One entity-level change. Subclasses are frozen dataclasses."""

    #: whether ``backwards`` can compute the snapshot before
    reversible: bool = True

    def forwards(self, snap: dict[str, Any]) -> dict[str, Any]:
        """The snapshot after this operation (a new dict; ``snap`` is not changed)."""
        result = shallow(snap)
        self._forwards(result)
        return result

    def backwards(self, snap: dict[str, Any]) -> dict[str, Any]:
        """The snapshot before this operation, from the one after it."""
        if not self.reversible:
            raise MigrationError(
                f"irreversible operation: {self.describe()} (it does not carry what it removed)"
            )
        result = shallow(snap)
        self._backwards(result)
        return result

    def _forwards(self, snap: dict[str, Any]) -> None:
        """Change ``snap`` in place: a shallow copy whose entity dicts are shared with the argument of
        ``forwards``, so an entity is changed only through :func:`owned` (copy on write)."""

    def _backwards(self, snap: dict[str, Any]) -> None:
        """Undo ``_forwards`` on ``snap`` in place."""

    def hints(self, before: Mapping, after: Mapping, hints: Any) -> None:
        """Add the physical facts this operation implies to ``hints`` (a ``_hints.Hints``)."""

    def render(self) -> str:
        """The Python source of this operation as written in a migration file."""
        from ponykit.migrate._render import Source

        return self.source(Source())

    def source(self, src: Any) -> str:
        """The source of this operation, recording its imports in ``src`` (a ``_render.Source``)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for humans."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.render()
