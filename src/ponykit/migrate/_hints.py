"""What the entity-level operations tell the physical planner beyond the two schemas they lead between.

Two physical schemas alone cannot tell a rename from a drop and an add, nor what value existing rows get
in a new NOT NULL column. Each schema operation adds what it knows to one :class:`Hints`, in physical
names (tables and columns of the *target* dialect, as Pony maps the snapshots before and after).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Hints"]


@dataclass
class Hints:
    """Physical facts for one group of schema operations, keyed by table and column names."""

    # old table name -> new table name (entity renames, and the link tables that follow them)
    table_renames: dict[str, str] = field(default_factory=dict)
    # (new table name, old column name) -> new column name (attribute renames, link columns, FK columns)
    column_renames: dict[tuple[str, str], str] = field(default_factory=dict)
    # (new table name, new column name) -> the Python value existing rows get (rendered per dialect)
    backfills: dict[tuple[str, str], Any] = field(default_factory=dict)
    # (new table name, new column name) whose type change may lose data and was allowed (--allow-lossy)
    lossy: set[tuple[str, str]] = field(default_factory=set)
    # (new table name, discriminator column, old value, new value): a subclass renamed or re-valued
    discriminator_updates: list[tuple[str, str, str, str]] = field(default_factory=list)
    # (new table name, discriminator column, value): rows of a dropped subclass, deleted before the DDL
    discriminator_deletes: list[tuple[str, str, str]] = field(default_factory=list)
    # tables and (table, column) pairs the operations drop on purpose (the planner refuses any other drop)
    dropped_tables: set[str] = field(default_factory=set)
    dropped_columns: set[tuple[str, str]] = field(default_factory=set)

    def merge(self, other: Hints) -> None:
        """Add ``other``'s facts to these."""
        self.table_renames.update(other.table_renames)
        self.column_renames.update(other.column_renames)
        self.backfills.update(other.backfills)
        self.lossy |= other.lossy
        self.discriminator_updates.extend(other.discriminator_updates)
        self.discriminator_deletes.extend(other.discriminator_deletes)
        self.dropped_tables |= other.dropped_tables
        self.dropped_columns |= other.dropped_columns
