"""MariaDB/MySQL steps: one statement per step, because MariaDB commits every DDL statement.

The runner records each finished step, so a migration that fails half way resumes at the failed step.
Foreign keys that go away (or whose columns change type, which MariaDB refuses under a foreign key) are
dropped in steps before everything else and added back in steps after. ``MODIFY`` restates the whole
target column definition: MariaDB silently drops NOT NULL and DEFAULT a ``MODIFY`` leaves out.
"""

from __future__ import annotations

from collections.abc import Iterator

from .._pony import PhysicalColumn, PhysicalForeignKey
from ._plan_diff import Diff, TableDiff

__all__ = ["steps"]

StepSpec = tuple[list[str], str | None, str]


def _definition(diff: Diff, col: PhysicalColumn, default: str | None) -> str:
    parts = [diff.q(col.name), col.sql_type]
    if default is not None:
        parts += ["DEFAULT", default]
    parts.append("NOT NULL" if col.not_null else "NULL")
    if col.auto:
        parts.append("AUTO_INCREMENT")
    return " ".join(parts)


def _retyped_fks(diff: Diff) -> dict[str, list[tuple[PhysicalForeignKey, PhysicalForeignKey]]]:
    """Kept foreign keys (old, new) whose child or parent columns change type: dropped and added again."""
    retyped = {
        (td.name, new.name) for td in diff.tables for old, new in td.altered if old.sql_type != new.sql_type
    }
    result: dict[str, list[tuple[PhysicalForeignKey, PhysicalForeignKey]]] = {}
    for td in diff.tables:
        gone = {id(fk) for fk in td.dropped_fks} | {id(old) for old, _ in td.fk_renames}
        new_by_cols = {fk.columns: fk for fk in td.new.foreign_keys}
        for fk in td.old.foreign_keys:
            if id(fk) in gone:
                continue
            new_fk = new_by_cols.get(tuple(td.new_of(c) or c for c in fk.columns))
            if new_fk is None:
                continue
            touched = any((td.name, c) in retyped for c in new_fk.columns) or any(
                (new_fk.parent_table, c) in retyped for c in new_fk.parent_columns
            )
            if touched:
                result.setdefault(td.name, []).append((fk, new_fk))
    return result


def steps(diff: Diff) -> Iterator[StepSpec]:
    """The MariaDB steps of ``diff``, in order, one statement each."""
    q = diff.q
    for root, column, value in diff.hints.discriminator_deletes:
        old_t, old_c = diff.old_table(root), diff.old_column(root, column)
        statement = f"DELETE FROM {q(old_t)} WHERE {q(old_c)} = {diff.lit(value)}"
        yield [statement], root, f"{root}: delete rows of dropped class {value!r}"
    retyped = _retyped_fks(diff)
    for td in diff.tables:
        fks = (
            td.dropped_fks + [old for old, _ in td.fk_renames] + [old for old, _ in retyped.get(td.name, [])]
        )
        if fks:
            clauses = ", ".join(f"DROP FOREIGN KEY {q(fk.name or '')}" for fk in fks)
            names = ", ".join(fk.name or "" for fk in fks)
            yield [f"ALTER TABLE {q(td.old.name)} {clauses}"], td.name, f"{td.name}: drop foreign key {names}"
    for table in diff.dropped:
        if table.foreign_keys:
            clauses = ", ".join(f"DROP FOREIGN KEY {q(fk.name or '')}" for fk in table.foreign_keys)
            yield (
                [f"ALTER TABLE {q(table.name)} {clauses}"],
                table.name,
                f"{table.name}: drop its foreign keys",
            )
    for table in diff.dropped:
        yield [f"DROP TABLE {q(table.name)}"], table.name, f"drop table {table.name}"
    for td in diff.tables:
        if td.renamed_table:
            yield (
                [f"RENAME TABLE {q(td.old.name)} TO {q(td.name)}"],
                td.name,
                f"rename table {td.old.name} -> {td.name}",
            )
    for td in diff.tables:
        yield from _table_steps(diff, td)
    for table in diff.created:
        yield [table.create_sql], table.name, f"create table {table.name}"
        for index in table.indexes:
            if index.kind == "index" and index.create_sql:
                yield [index.create_sql], table.name, f"{table.name}: add index {index.name}"
    for td in diff.tables:
        added = (
            td.added_fks + [new for _, new in td.fk_renames] + [new for _, new in retyped.get(td.name, [])]
        )
        for fk in added:
            if fk.create_sql:
                yield [fk.create_sql], td.name, f"{td.name}: add foreign key {fk.name}"
    for table in diff.created:
        for fk in table.foreign_keys:
            if fk.create_sql:
                yield [fk.create_sql], table.name, f"{table.name}: add foreign key {fk.name}"
    for root, column, old, new in diff.hints.discriminator_updates:
        statement = f"UPDATE {q(root)} SET {q(column)} = {diff.lit(new)} WHERE {q(column)} = {diff.lit(old)}"
        yield [statement], root, f"{root}: discriminator {old!r} -> {new!r}"


def _table_steps(diff: Diff, td: TableDiff) -> Iterator[StepSpec]:
    q, t = diff.q, td.name
    alter = f"ALTER TABLE {q(t)} "
    dropped_cols = {c.name for c in td.dropped}
    replaced = {c.name for c in td.replaced}
    if replaced:  # a column renamed onto the name of a dropped one: drop that one (and its indexes) first
        clauses = [
            f"DROP INDEX {q(index.name or index.columns[0])}"
            for index in td.dropped_indexes
            if any(c in replaced for c in index.columns) and not all(c in replaced for c in index.columns)
        ]
        clauses += [f"DROP COLUMN {q(name)}" for name in sorted(replaced)]
        yield [alter + ", ".join(clauses)], t, f"{t}: drop column {', '.join(sorted(replaced))}"
    clauses = [f"RENAME COLUMN {q(old)} TO {q(new)}" for old, new in td.renamed]
    what = [f"rename column {old} -> {new}" for old, new in td.renamed]
    for old_index, new_index in td.index_renames:
        if old_index.name and new_index.name:
            clauses.append(f"RENAME INDEX {q(old_index.name)} TO {q(new_index.name)}")
            what.append(f"rename index {old_index.name} -> {new_index.name}")
    for old_index, new_index in td.kept_indexes:
        # MariaDB names a single-column UNIQUE after its column: keep that true, a later drop relies on it
        if old_index.name is None and not old_index.primary and old_index.columns != new_index.columns:
            clauses.append(f"RENAME INDEX {q(old_index.columns[0])} TO {q(new_index.columns[0])}")
    if clauses:
        yield [alter + ", ".join(clauses)], t, f"{t}: " + "; ".join(what)
    clauses, what = [], []
    for index in td.dropped_indexes:
        if all(c in dropped_cols for c in index.columns) or any(c in replaced for c in index.columns):
            continue  # goes with its columns, or went with a replaced one
        if index.primary:
            clauses.append("DROP PRIMARY KEY")
        else:
            # MariaDB names a single-column UNIQUE after its column (the old name: renames keep it)
            clauses.append(f"DROP INDEX {q(index.name or index.columns[0])}")
        what.append(f"drop index {index.name or ', '.join(index.columns)}")
    for col in td.dropped:
        if col.name in replaced:
            continue
        clauses.append(f"DROP COLUMN {q(col.name)}")
        what.append(f"drop column {col.name}")
    if clauses:
        yield [alter + ", ".join(clauses)], t, f"{t}: " + "; ".join(what)
    for old, new in td.altered:
        if new.not_null and not old.not_null and new.name in td.backfills:
            value = td.backfills[new.name]
            c = q(new.name)
            sql = f"UPDATE {q(t)} SET {c} = {diff.lit(value)} WHERE {c} IS NULL"
            yield [sql], t, f"{t}: backfill {new.name} = {value!r} where NULL"
    clauses, what, undefault = [], [], []
    for col in td.added:
        if col.name in td.backfills:
            value = td.backfills[col.name]
            definition = _definition(diff, col, diff.lit(value))
            if col.unique:
                definition += " UNIQUE"
            clauses.append(f"ADD COLUMN {definition}")
            what.append(f"add column {col.name} (backfill {value!r})")
            undefault.append(col)
        else:
            clauses.append(f"ADD COLUMN {col.definition}")
            what.append(f"add column {col.name}")
    for _old, new in td.altered:
        clauses.append(f"MODIFY COLUMN {_definition(diff, new, new.default)}")
        what.append(f"alter column {new.name} to {_definition(diff, new, new.default)}")
    if clauses:
        yield [alter + ", ".join(clauses)], t, f"{t}: " + "; ".join(what)
    for name in sorted(td.emptied):  # before the UNIQUE is added below
        c = q(name)
        yield [f"UPDATE {q(t)} SET {c} = NULL WHERE {c} = ''"], t, f"{t}: {name} '' -> NULL"
    if undefault:
        clauses = [
            f"ALTER COLUMN {q(c.name)} " + (f"SET DEFAULT {c.default}" if c.default else "DROP DEFAULT")
            for c in undefault
        ]
        yield [alter + ", ".join(clauses)], t, f"{t}: drop the backfill defaults"
    clauses, what = [], []
    added_cols = {c.name for c in td.added}
    for index in td.added_indexes:
        cols = ", ".join(q(c) for c in index.columns)
        if index.name is None and index.columns[0] in added_cols and not index.primary:
            continue  # came inline with ADD COLUMN ... UNIQUE
        if index.primary:
            clauses.append(f"ADD PRIMARY KEY ({cols})")
        elif index.constraint_sql:
            clauses.append(f"ADD {index.constraint_sql}")
        elif index.name is None:
            clauses.append(f"ADD UNIQUE ({cols})")
        else:
            clauses.append(f"ADD {'UNIQUE ' if index.unique else ''}INDEX {q(index.name)} ({cols})")
        what.append(f"add {'unique ' if index.unique else ''}index {index.name or ', '.join(index.columns)}")
    if clauses:
        yield [alter + ", ".join(clauses)], t, f"{t}: " + "; ".join(what)
