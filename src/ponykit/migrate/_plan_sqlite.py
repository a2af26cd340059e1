"""SQLite steps: native renames, then one rebuild per table whose structure changes.

SQLite cannot alter a column's type, nullability or constraints, nor drop an indexed, unique or foreign key
column, and it keeps each CREATE TABLE as text (the only place a named UNIQUE constraint survives). So a
table whose columns or constraints change is rebuilt from Pony's own CREATE TABLE: ``CREATE TABLE
"T__new"``, ``INSERT ... SELECT`` (renames, backfills), ``DROP TABLE "T"``, ``ALTER TABLE "T__new" RENAME
TO "T"``, then Pony's indexes. The old table is never renamed away first (children's foreign keys would
follow it: Pony #366). Table and column renames are native: SQLite rewrites indexes and the children's
REFERENCES with them. The runner turns foreign keys off around the transaction and runs ``PRAGMA
foreign_key_check`` before commit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .._pony import PhysicalTable
from ._plan_diff import Diff, TableDiff

__all__ = ["steps"]

StepSpec = tuple[list[str], str | None, str]


def _indexes(table: PhysicalTable) -> list[str]:
    return [i.create_sql for i in table.indexes if i.kind == "index" and i.create_sql]


def _create_as(diff: Diff, table: PhysicalTable, name: str) -> str:
    pattern = re.compile(
        r'^(CREATE TABLE (?:IF NOT EXISTS )?)"' + re.escape(table.name.replace('"', '""')) + '"'
    )
    sql, count = pattern.subn(lambda m: m.group(1) + diff.q(name), table.create_sql, count=1)
    if count != 1:
        raise AssertionError(f"unexpected CREATE TABLE text for {table.name}: {table.create_sql[:60]!r}")
    return sql


def steps(diff: Diff) -> Iterator[StepSpec]:
    """The SQLite steps of ``diff``, in order (all run in one transaction)."""
    q = diff.q
    for root, column, value in diff.hints.discriminator_deletes:
        old_t, old_c = diff.old_table(root), diff.old_column(root, column)
        statement = f"DELETE FROM {q(old_t)} WHERE {q(old_c)} = {diff.lit(value)}"
        yield [statement], root, f"{root}: delete rows of dropped class {value!r}"
    # Dropped tables first: a renamed table may take the name of one (foreign keys are off).
    for table in diff.dropped:
        yield [f"DROP TABLE {q(table.name)}"], table.name, f"drop table {table.name}"
    for td in diff.tables:
        sql = [f"ALTER TABLE {q(td.old.name)} RENAME TO {q(td.name)}"] if td.renamed_table else []
        what = [f"rename table {td.old.name} -> {td.name}"] if td.renamed_table else []
        # A column renamed onto the name of a dropped one: move that one aside (the rebuild drops it).
        sql += [
            f"ALTER TABLE {q(td.name)} RENAME COLUMN {q(c.name)} TO {q(c.name + '__dropped')}"
            for c in td.replaced
        ]
        sql += [f"ALTER TABLE {q(td.name)} RENAME COLUMN {q(old)} TO {q(new)}" for old, new in td.renamed]
        what += [f"rename column {old} -> {new}" for old, new in td.renamed]
        if sql:
            yield sql, td.name, f"{td.name}: " + "; ".join(what)
    kept = {td.name: td for td in diff.tables}
    for name in [t.name for t in diff.created] + [td.name for td in diff.tables]:
        if name not in kept:
            table = diff.after.tables[name]
            yield [table.create_sql, *_indexes(table)], name, f"create table {name}"
        elif kept[name].changes_structure():
            yield _rebuild(diff, kept[name])
        else:
            step = _light(diff, kept[name])
            if step is not None:
                yield step
    for root, column, old, new in diff.hints.discriminator_updates:
        statement = f"UPDATE {q(root)} SET {q(column)} = {diff.lit(new)} WHERE {q(column)} = {diff.lit(old)}"
        yield [statement], root, f"{root}: discriminator {old!r} -> {new!r}"


def _rebuild(diff: Diff, td: TableDiff) -> StepSpec:
    q, t = diff.q, td.name
    tmp = f"{t}__new"
    targets: list[str] = []
    sources: list[str] = []
    why: list[str] = []
    for col in td.new.columns:
        backfill = td.backfills.get(col.name, None) if col.name in td.backfills else None
        if col.name in td.old_of:
            # Native renames ran first: the old table already carries the new column names.
            expr = q(col.name)
            if col.name in td.backfills and col.not_null:
                expr = f"COALESCE({expr}, {diff.lit(backfill)})"
            if col.name in td.emptied:
                expr = f"NULLIF({expr}, '')"
            targets.append(q(col.name))
            sources.append(expr)
        elif col.name in td.backfills:
            targets.append(q(col.name))
            sources.append(diff.lit(backfill))
            why.append(f"add column {col.name} (backfill {backfill!r})")
        else:
            why.append(f"add column {col.name}")
    why += [f"drop column {c.name}" for c in td.dropped]
    why += [f"alter column {new.name} ({_change(old, new)})" for old, new in td.altered]
    why += [f"drop index {i.name or ', '.join(i.columns)}" for i in td.dropped_indexes if i.kind == "inline"]
    why += [f"add unique {i.name or ', '.join(i.columns)}" for i in td.added_indexes if i.kind == "inline"]
    why += [f"rename constraint {o.name} -> {n.name}" for o, n in td.index_renames if o.kind == "inline"]
    why += ["foreign keys change"] if td.dropped_fks or td.added_fks else []
    sql = [
        _create_as(diff, td.new, tmp),
        f"INSERT INTO {q(tmp)} ({', '.join(targets)}) SELECT {', '.join(sources)} FROM {q(t)}",
    ]
    if "AUTOINCREMENT" in td.old.create_sql.upper() and "AUTOINCREMENT" in td.new.create_sql.upper():
        # AUTOINCREMENT never reuses an id: carry the old table's counter over (the copy only saw the
        # surviving rows); the table renames below rename its sqlite_sequence row with it.
        sql += [
            f"DELETE FROM sqlite_sequence WHERE name = {diff.lit(tmp)}",
            f"UPDATE sqlite_sequence SET name = {diff.lit(tmp)} WHERE name = {diff.lit(t)}",
        ]
    sql += [
        f"DROP TABLE {q(t)}",
        f"ALTER TABLE {q(tmp)} RENAME TO {q(t)}",
        *_indexes(td.new),
    ]
    return sql, t, f"{t}: rebuild ({'; '.join(why) or 'constraints change'})"


def _change(old: object, new: object) -> str:
    parts = []
    for attr in ("sql_type", "not_null", "default"):
        a, b = getattr(old, attr), getattr(new, attr)
        if a != b:
            parts.append(f"{attr} {a} -> {b}")
    return ", ".join(parts)


def _light(diff: Diff, td: TableDiff) -> StepSpec | None:
    q, t = diff.q, td.name
    sql: list[str] = []
    what: list[str] = []
    for index in td.dropped_indexes + [old for old, _ in td.index_renames]:
        if index.name:
            sql.append(f"DROP INDEX {q(index.name)}")
            what.append(f"drop index {index.name}")
    for col in td.added:
        sql.append(f"ALTER TABLE {q(t)} ADD COLUMN {col.definition}")
        if col.name in td.backfills:  # a nullable column with a value for the existing rows (a subclass')
            value = td.backfills[col.name]
            sql.append(f"UPDATE {q(t)} SET {q(col.name)} = {diff.lit(value)}")
            what.append(f"add column {col.name} (backfill {value!r})")
        else:
            what.append(f"add column {col.name}")
    for index in td.added_indexes + [new for _, new in td.index_renames]:
        if index.create_sql:
            sql.append(index.create_sql)
            what.append(f"add index {index.name}")
    return (sql, t, f"{t}: " + "; ".join(what)) if sql else None
