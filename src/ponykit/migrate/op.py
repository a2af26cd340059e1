"""The operations of migration files: ``from ponykit.migrate import op``.

Each operation is a small frozen object with ``forwards(snapshot)``, ``backwards(snapshot)``,
``reversible``, ``hints(before, after, hints)``, ``render()`` and ``describe()``. Attribute declarations
are Pony's own classes (``op.AddAttr("Person", "nick", Optional(str, 40))``); the operations hold them as
snapshot attr dicts. :func:`collect_hints` gives the physical planner the facts of a whole migration.
"""

from __future__ import annotations

from ponykit.migrate._ops_attr import (
    AddAttr,
    AlterAttr,
    DropAttr,
    RenameAttr,
    implied_backfill,
    needs_backfill,
)
from ponykit.migrate._ops_base import MISSING, Operation
from ponykit.migrate._ops_code import RunPython, RunSQL, noop
from ponykit.migrate._ops_entity import (
    AddCompositeIndex,
    AddCompositeKey,
    AddEntity,
    DropCompositeIndex,
    DropCompositeKey,
    DropEntity,
    RenameEntity,
    SetDiscriminator,
    SetTable,
)
from ponykit.migrate._ops_hints import collect_hints

__all__ = [
    "MISSING",
    "AddAttr",
    "AddCompositeIndex",
    "AddCompositeKey",
    "AddEntity",
    "AlterAttr",
    "DropAttr",
    "DropCompositeIndex",
    "DropCompositeKey",
    "DropEntity",
    "Operation",
    "RenameAttr",
    "RenameEntity",
    "RunPython",
    "RunSQL",
    "SetDiscriminator",
    "SetTable",
    "collect_hints",
    "implied_backfill",
    "needs_backfill",
    "noop",
]
