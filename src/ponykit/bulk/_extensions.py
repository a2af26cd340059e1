"""Extensions: what entity mixins (``ponykit.mixins``) add to the bulk writes of their entities.

The bulk functions know nothing of timestamps, versions or audit history; a mixin registers a
:class:`BulkExtension` on its entity class when the class is declared, and every bulk call on that
entity (or a subclass) runs the extension's hooks at fixed points:

* ``prepare_insert`` / ``prepare_update``: the rows of a batch before they are validated and encoded
  (a timestamp filled in, a value added), for ``bulk_insert`` and for ``bulk_update`` / ``bulk_upsert``;
* ``set_exprs``: more ``SET`` clauses of every UPDATE (and upsert's update), computed by the database
  from the stored row (a version counted up);
* ``before_change`` / ``after_change``: around the statements of one batch, with the keys of the rows
  the batch writes (an audit trail reads the rows before and after);
* ``soft_delete_rows``: what ``bulk_delete(..., soft=True)`` writes instead of deleting.

Hooks run inside the bulk call's savepoint: an exception undoes the whole call like any other failure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["BulkExtension", "Change", "extensions_of", "register_extension"]

Row = Any  # a dict of attribute name -> value, as given by the caller


@dataclass(frozen=True)
class Change:
    """The rows one batch of a bulk call writes: ``op`` (``"insert"``, ``"update"``, ``"upsert"`` or
    ``"delete"``), the ``entity``, the ``columns`` that find the rows (the primary key's, or an upsert's
    conflict key's) and ``keys``: one tuple of those columns' values per row, as bound to the statement
    (None when ``bulk_insert`` could not learn generated keys).

    ``bulk_update`` also gives ``values``: per group of rows that set the same columns, ``(set columns,
    rows)``, each row the key's values then the set columns' values, as bound; and ``computed``: the
    columns the database computes at every update (``set_exprs``), whose new values only a read shows.
    """

    op: str
    entity: Any
    columns: tuple[str, ...]
    keys: list[tuple[Any, ...]] | None
    values: tuple[tuple[tuple[str, ...], list[tuple[Any, ...]]], ...] = ()
    computed: tuple[str, ...] = ()


class BulkExtension:
    """The hooks of one mixin on the bulk writes of an entity; every hook does nothing by default."""

    #: ``bulk_insert`` asks the database for generated keys (RETURNING), so ``after_change`` knows them.
    wants_keys: bool = False

    def prepare_insert(self, entity: Any, batch: list[Row]) -> list[Row]:
        """The rows to insert (called per batch, before validation); may return new dicts."""
        return batch

    def prepare_update(self, entity: Any, batch: list[Row]) -> list[Row]:
        """The rows to update or upsert (called per batch, before validation); may return new dicts."""
        return batch

    def update_names(self, entity: Any) -> tuple[str, ...]:
        """The attributes :meth:`prepare_update` adds to every row: a ``bulk_update(fields=...)`` or
        ``bulk_upsert(update=...)`` that names its attributes writes these too."""
        return ()

    def set_exprs(self, entity: Any) -> Mapping[str, str]:
        """Attribute name -> SQL template of a value the database computes at every update of a row;
        ``{col}`` in the template is the column as stored (``{"version": "{col} + 1"}``)."""
        return {}

    def soft_delete_rows(self, entity: Any, keys: Sequence[Any]) -> list[Row] | None:
        """``bulk_delete(..., soft=True)``: the ``bulk_update`` rows that mark these primary keys deleted
        (None: this extension does not soft-delete)."""
        return None

    def before_change(self, change: Change) -> Any:
        """Called before a batch's statements; what it returns is given to :meth:`after_change`."""
        return None

    def after_change(self, change: Change, token: Any) -> None:
        """Called after a batch's statements succeeded, inside the bulk call's savepoint."""


def register_extension(entity: Any, extension: BulkExtension) -> None:
    """Add ``extension`` to the bulk writes of ``entity`` and its subclasses (a mixin calls this when
    its entity class is declared, before any bulk call)."""
    own: list[BulkExtension] = entity.__dict__.get("_ponykit_bulk_extensions_") or []
    if extension not in own:
        # Set on the class itself (not through inheritance): a subclass adds its own on top.
        setattr(entity, "_ponykit_bulk_extensions_", [*own, extension])  # noqa: B010 - a name with dunders


def extensions_of(entity: Any) -> tuple[BulkExtension, ...]:
    """The extensions of ``entity`` and of its bases, bases first, each once."""
    found: list[BulkExtension] = []
    for klass in reversed(entity.__mro__):
        for extension in klass.__dict__.get("_ponykit_bulk_extensions_", ()):
            if extension not in found:
                found.append(extension)
    return tuple(found)
