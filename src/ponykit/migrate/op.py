"""The operations of migration files: ``from ponykit.migrate import op``.

Each operation is a small frozen object with ``forwards(snapshot)``, ``backwards(snapshot)``,
``reversible``, ``hints(before, after, hints)``, ``render()`` and ``describe()``. Attribute declarations
are Pony's own classes (``op.AddAttr("Person", "nick", Optional(str, 40))``); the operations hold them as
snapshot attr dicts. :func:`collect_hints` gives the physical planner the facts of a whole migration.

Operations:

- ``AddEntity(name, attrs=[(name, decl), ...], bases=(), table=None, discriminator=None,
  primary_key=None, composite_keys=(), composite_indexes=())``; ``DropEntity`` takes the same arguments
  (without ``attrs`` it is irreversible).
- ``RenameEntity(old, new)``: the table, m2m tables and columns and the discriminator value follow.
- ``AddAttr(entity, name, decl, backfill=MISSING, before=None)`` (``before``: the attribute it precedes);
  ``DropAttr(entity, name, spec=None, before=None)`` (``spec``: the declaration, for reversal);
  ``RenameAttr(entity, old, new)``; ``AlterAttr(entity, name, old_decl, new_decl, lossy=False,
  backfill=MISSING)`` (``backfill``: the value NULLs get when it becomes NOT NULL).
- ``AddCompositeKey/DropCompositeKey/AddCompositeIndex/DropCompositeIndex(entity, attrs)``,
  ``SetDiscriminator(entity, old, new)``, ``SetTable(entity, old, new)``.
- ``RunPython(fn, reverse=None)``, ``RunSQL(sql or {dialect: sql}, reverse=None)``; ``reverse=op.noop``
  makes a data step reversible without doing anything.
- ``Unrestorable(text)`` stands for a value no file can hold (a lambda ``default=``): declared, never
  called (a historical model has no such default).
"""

from __future__ import annotations

from ponykit._pony import Unrestorable
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
    "Unrestorable",
    "collect_hints",
    "implied_backfill",
    "needs_backfill",
    "noop",
]
