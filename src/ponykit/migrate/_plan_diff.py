"""What differs between two physical schemas once the hints' renames are applied (dialect-neutral).

Objects are matched by what they are, not by name: a column by its (renamed) name, an index by its
(renamed) columns and kind, a foreign key by its (renamed) columns, parent table, parent columns and
ON DELETE. A matched object whose Pony name differs is a rename (``idx_person__name`` ->
``idx_person__full_name`` after an attribute rename); anything else is dropped or added.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .._pony import PhysicalColumn, PhysicalForeignKey, PhysicalIndex, PhysicalSchema, PhysicalTable
from ..errors import MigrationError
from ._hints import Hints
from ._literals import literal

__all__ = ["Diff", "IndexKey", "TableDiff", "diff_schemas", "quote"]

IndexKey = tuple[tuple[str, ...], bool, bool]  # columns, unique, primary
FkKey = tuple[tuple[str, ...], str, tuple[str, ...], str | None]


def quote(name: str, dialect: str) -> str:
    """``name`` quoted as an identifier for ``dialect``."""
    if dialect == "mysql":
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


@dataclass
class TableDiff:
    """A table present before and after (maybe renamed), and what changes in it."""

    old: PhysicalTable
    new: PhysicalTable
    old_of: dict[str, str]  # new column name -> old column name, for columns kept (maybe renamed)
    added: list[PhysicalColumn] = field(default_factory=list)
    dropped: list[PhysicalColumn] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)  # (old, new) column names
    altered: list[tuple[PhysicalColumn, PhysicalColumn]] = field(default_factory=list)
    index_renames: list[tuple[PhysicalIndex, PhysicalIndex]] = field(default_factory=list)
    dropped_indexes: list[PhysicalIndex] = field(default_factory=list)
    added_indexes: list[PhysicalIndex] = field(default_factory=list)
    kept_indexes: list[tuple[PhysicalIndex, PhysicalIndex]] = field(default_factory=list)
    fk_renames: list[tuple[PhysicalForeignKey, PhysicalForeignKey]] = field(default_factory=list)
    dropped_fks: list[PhysicalForeignKey] = field(default_factory=list)
    added_fks: list[PhysicalForeignKey] = field(default_factory=list)
    backfills: dict[str, Any] = field(default_factory=dict)  # new column name -> Python value

    @property
    def name(self) -> str:
        """The table's new name."""
        return self.new.name

    @property
    def renamed_table(self) -> bool:
        """Whether the table itself is renamed."""
        return self.old.name != self.new.name

    @property
    def replaced(self) -> list[PhysicalColumn]:
        """Dropped columns whose name a renamed column takes: they must go before the renames run."""
        taken = {new for _, new in self.renamed}
        return [c for c in self.dropped if c.name in taken]

    @property
    def emptied(self) -> set[str]:
        """Text columns that become NULL-able and unique (an Optional str gets ``unique=True``): Pony wrote
        ``''`` for "no value" and now writes NULL, and many ``''`` would break the new UNIQUE."""
        unique = {
            i.columns[0] for i in self.added_indexes if i.unique and not i.primary and len(i.columns) == 1
        }
        return {
            new.name
            for old, new in self.altered
            if old.not_null and not new.not_null and new.name in unique and _is_text(new.sql_type)
        }

    def old_name(self, new_column: str) -> str:
        """The old name of a kept column."""
        return self.old_of[new_column]

    def new_of(self, old_column: str) -> str | None:
        """The new name of an old column, or None if it is dropped."""
        for new, old in self.old_of.items():
            if old == old_column:
                return new
        return None

    def changes_structure(self) -> bool:
        """Whether anything beyond names and separate indexes changes (SQLite rebuilds such a table)."""
        inline = any(i.kind == "inline" for i in self.dropped_indexes + self.added_indexes)
        inline = inline or any(o.kind == "inline" for o, _ in self.index_renames)
        return bool(self.dropped or self.altered or self.dropped_fks or self.added_fks or inline) or any(
            c.not_null or c.unique or c.primary or self.in_fk(c.name) for c in self.added
        )

    def in_fk(self, column: str) -> bool:
        """Whether the new column is part of a foreign key of the new table."""
        return any(column in fk.columns for fk in self.new.foreign_keys)


@dataclass
class Diff:
    """Every difference between two physical schemas, with the hints that explain them."""

    before: PhysicalSchema
    after: PhysicalSchema
    hints: Hints
    tables: list[TableDiff]  # kept tables: renamed ones in a safe rename order, then the others
    created: list[PhysicalTable]  # new tables, in creation order
    dropped: list[PhysicalTable]  # dropped tables, in reverse creation order
    new_name: dict[str, str]  # old table name -> new table name (kept tables)

    @property
    def dialect(self) -> str:
        """The dialect of both schemas."""
        return self.after.dialect

    def q(self, name: str) -> str:
        """``name`` quoted for the dialect."""
        return quote(name, self.dialect)

    def lit(self, value: Any, sql_type: str | None = None) -> str:
        """A Python value as a SQL literal for the dialect (for a column of ``sql_type`` if given)."""
        return literal(value, self.dialect, sql_type)

    def old_table(self, new_table: str) -> str:
        """The old name of a kept table (or the name itself)."""
        for old, new in self.new_name.items():
            if new == new_table:
                return old
        return new_table

    def old_column(self, new_table: str, new_column: str) -> str:
        """The old name of a column of a kept table (or the name itself)."""
        for td in self.tables:
            if td.name == new_table:
                return td.old_of.get(new_column, new_column)
        return new_column

    def checks(self) -> Iterator[tuple[str, str]]:
        """The checks (query that must return 0, message) to run before any DDL, on the old names."""
        length = "LENGTH" if self.dialect == "sqlite" else "CHAR_LENGTH"
        for td in self.tables:
            t = self.q(td.old.name)
            for col in td.added:
                if col.not_null and col.default is None and not col.auto and col.name not in td.backfills:
                    yield (
                        f"SELECT COUNT(*) FROM {t}",
                        f"table {td.old.name} has rows: column {td.name}.{col.name} is added NOT NULL without"
                        " a default or backfill; give a backfill value for it",
                    )
            for old, new in td.altered:
                c = self.q(old.name)
                if new.not_null and not old.not_null and new.name not in td.backfills:
                    yield (
                        f"SELECT COUNT(*) FROM {t} WHERE {c} IS NULL",
                        f"column {td.name}.{new.name} becomes NOT NULL but has NULL values; give a backfill"
                        " value for them or fix the rows first",
                    )
                limit = _narrowed_length(old.sql_type, new.sql_type)
                if limit is not None:
                    yield (
                        f"SELECT COUNT(*) FROM {t} WHERE {length}({c}) > {limit}",
                        f"column {td.name}.{new.name} narrows from {old.sql_type} to {new.sql_type} but has"
                        f" values longer than {limit} characters; shorten them first",
                    )
                bounds = _narrowed_int(old.sql_type, new.sql_type)
                if bounds is not None:
                    yield (
                        f"SELECT COUNT(*) FROM {t} WHERE {c} < {bounds[0]} OR {c} > {bounds[1]}",
                        f"column {td.name}.{new.name} narrows from {old.sql_type} to {new.sql_type} but has"
                        f" values outside [{bounds[0]}, {bounds[1]}]; change them first",
                    )


_VARCHAR = re.compile(r"^(?:VARCHAR|CHARACTER VARYING|CHAR)\((\d+)\)$")
_TEXTS = ("TEXT", "LONGTEXT", "MEDIUMTEXT", "CLOB")
_INT_RANGES = {
    "TINYINT": (-(2**7), 2**7 - 1),
    "SMALLINT": (-(2**15), 2**15 - 1),
    "MEDIUMINT": (-(2**23), 2**23 - 1),
    "INTEGER": (-(2**31), 2**31 - 1),
    "INT": (-(2**31), 2**31 - 1),
    "BIGINT": (-(2**63), 2**63 - 1),
}


def _is_text(sql_type: str) -> bool:
    return _VARCHAR.match(sql_type) is not None or sql_type in _TEXTS


def _varchar(sql_type: str) -> int | None:
    match = _VARCHAR.match(sql_type)
    if match:
        return int(match.group(1))
    return 10**12 if sql_type in _TEXTS else None


def _narrowed_length(old: str, new: str) -> int | None:
    before, after = _varchar(old), _varchar(new)
    if before is not None and after is not None and after < before:
        return after
    return None


def _narrowed_int(old: str, new: str) -> tuple[int, int] | None:
    before, after = _INT_RANGES.get(old), _INT_RANGES.get(new)
    if before and after and (after[0] > before[0] or after[1] < before[1]):
        return after
    return None


def _index_key(index: PhysicalIndex, cols: dict[str, str]) -> IndexKey:
    return tuple(cols.get(c, c) for c in index.columns), index.unique, index.primary


def _fk_key(fk: PhysicalForeignKey, cols: dict[str, str], tables: dict[str, str], parents: Any) -> FkKey:
    parent = tables.get(fk.parent_table, fk.parent_table)
    pcols = parents.get(parent, {})
    return (
        tuple(cols.get(c, c) for c in fk.columns),
        parent,
        tuple(pcols.get(c, c) for c in fk.parent_columns),
        fk.on_delete,
    )


def _column_changed(old: PhysicalColumn, new: PhysicalColumn) -> bool:
    return (old.sql_type, old.not_null, old.default, old.auto) != (
        new.sql_type,
        new.not_null,
        new.default,
        new.auto,
    )


def _dropped_ok(hints: Hints, names: tuple[str, ...], column: str | None = None) -> bool:
    if column is None:
        return any(n in hints.dropped_tables for n in names)
    return any((n, column) in hints.dropped_columns for n in names)


def diff_schemas(before: PhysicalSchema, after: PhysicalSchema, hints: Hints) -> Diff:
    """The differences from ``before`` to ``after`` under ``hints``; AssertionError on an unexplained drop."""
    new_name: dict[str, str] = {}
    targets = set(hints.table_renames.values())
    for old in before.tables:
        if old not in hints.table_renames and old in targets:
            continue  # another table is renamed to its name: this one goes (a replaced m2m table)
        target = hints.table_renames.get(old, old)
        if target in after.tables:
            new_name[old] = target
    kept_new = set(new_name.values())
    dropped = [before.tables[n] for n in reversed(_ordered(before)) if n not in new_name]
    for table in dropped:
        if not _dropped_ok(hints, (table.name, hints.table_renames.get(table.name, table.name))):
            raise AssertionError(
                f"table {table.name} disappears but the hints do not drop it (dropped_tables)"
            )
    created = [after.tables[n] for n in _ordered(after) if n not in kept_new]
    # old column -> new column, per new table name (parents' renames are needed to match foreign keys)
    col_maps: dict[str, dict[str, str]] = {}
    for old, new in new_name.items():
        new_cols = set(after.tables[new].column_names)
        mapping = {}
        col_targets = {n for (t, _), n in hints.column_renames.items() if t == new}
        for col in before.tables[old].column_names:
            if (new, col) not in hints.column_renames and col in col_targets:
                continue  # another column is renamed to its name: this one is dropped
            target = hints.column_renames.get((new, col), col)
            if target in new_cols:
                mapping[col] = target
        col_maps[new] = mapping
    old_by_new = {new: old for old, new in new_name.items()}
    tables = [
        _diff_table(before.tables[old_by_new[n]], after.tables[n], col_maps, new_name, hints)
        for n in _ordered(after)
        if n in old_by_new
    ]
    renamed = {td.old.name: td for td in tables if td.renamed_table}
    ordered = _rename_order({old: td.name for old, td in renamed.items()}, "tables")
    tables = [renamed[old] for old in ordered] + [td for td in tables if not td.renamed_table]
    for td in tables:
        order = _rename_order(dict(td.renamed), f"columns of table {td.name}")
        td.renamed = [(old, dict(td.renamed)[old]) for old in order]
    return Diff(before, after, hints, tables, created, dropped, new_name)


def _rename_order(renames: dict[str, str], what: str) -> list[str]:
    """The old names in an order where no rename takes a name still in use by a later one (a -> b after
    b -> c); a cycle (a <-> b) is refused: Pony's names would have to pass through a temporary one."""
    order: list[str] = []
    pending = dict(renames)
    while pending:
        ready = sorted(old for old, new in pending.items() if new not in pending)
        if not ready:
            cycle = ", ".join(f"{o} -> {n}" for o, n in sorted(pending.items()))
            raise MigrationError(
                f"the renames of {what} form a cycle ({cycle}): split them into two migrations through a"
                " temporary name"
            )
        for old in ready:
            order.append(old)
            del pending[old]
    return order


def _ordered(schema: PhysicalSchema) -> list[str]:
    order = list(schema.order)
    return order + sorted(n for n in schema.tables if n not in order)


def _diff_table(
    old: PhysicalTable,
    new: PhysicalTable,
    col_maps: dict[str, dict[str, str]],
    tables: dict[str, str],
    hints: Hints,
) -> TableDiff:
    cols = col_maps[new.name]
    td = TableDiff(old, new, {n: o for o, n in cols.items()})
    for column in old.columns:
        if column.name not in cols:
            if not _dropped_ok(hints, (old.name, new.name), column.name):
                raise AssertionError(
                    f"column {old.name}.{column.name} disappears but the hints do not drop it"
                    " (dropped_columns)"
                )
            td.dropped.append(column)
        elif cols[column.name] != column.name:
            td.renamed.append((column.name, cols[column.name]))
    for column in new.columns:
        if column.name not in td.old_of:
            td.added.append(column)
        else:
            before = old.column(td.old_of[column.name])
            if _column_changed(before, column):
                td.altered.append((before, column))
        if (new.name, column.name) in hints.backfills:
            td.backfills[column.name] = hints.backfills[(new.name, column.name)]
    new_indexes = {_index_key(i, {}): i for i in new.indexes}
    seen: set[IndexKey] = set()
    for index in old.indexes:
        key = _index_key(index, cols)
        if any(c not in cols for c in index.columns):
            td.dropped_indexes.append(index)  # goes with a dropped column
            continue
        match = new_indexes.get(key)
        if match is None or match.kind != index.kind:
            td.dropped_indexes.append(index)
            continue
        seen.add(key)
        if match.name != index.name:
            td.index_renames.append((index, match))
        else:
            td.kept_indexes.append((index, match))
    td.added_indexes = [i for k, i in new_indexes.items() if k not in seen]
    new_fks = {_fk_key(f, {}, {}, {}): f for f in new.foreign_keys}
    seen_fks: set[FkKey] = set()
    for fk in old.foreign_keys:
        fk_key = _fk_key(fk, cols, tables, col_maps)
        fk_match = new_fks.get(fk_key)
        if fk_match is None or any(c not in cols for c in fk.columns):
            td.dropped_fks.append(fk)
            continue
        seen_fks.add(fk_key)
        if fk_match.name != fk.name:
            td.fk_renames.append((fk, fk_match))
    td.added_fks = [f for k, f in new_fks.items() if k not in seen_fks]
    return td
