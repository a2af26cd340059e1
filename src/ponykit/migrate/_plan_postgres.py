"""PostgreSQL steps: transactional ``ALTER TABLE``, ``ALTER INDEX ... RENAME`` and Pony's own DDL.

The whole migration runs in one transaction, so the steps are grouped per table for readable output
only. Names PostgreSQL chooses itself (``t_pkey``, ``t_col_key``, ``t_col_seq``) are renamed along with
their table or column, so a migrated database carries the names a fresh one would.
"""

from __future__ import annotations

from collections.abc import Iterator

from .._pony import PhysicalColumn, PhysicalIndex
from ._plan_diff import Diff, TableDiff

__all__ = ["steps"]

StepSpec = tuple[list[str], str | None, str]


def _pg_name(name: str) -> str:
    return name[:63]


def _unique_name(table: str, column: str) -> str:
    return _pg_name(f"{table}_{column}_key")


def steps(diff: Diff) -> Iterator[StepSpec]:
    """The PostgreSQL steps of ``diff``, in order."""
    q = diff.q
    for root, column, value in diff.hints.discriminator_deletes:
        old_t, old_c = diff.old_table(root), diff.old_column(root, column)
        statement = f"DELETE FROM {q(old_t)} WHERE {q(old_c)} = {diff.lit(value)}"
        yield [statement], root, f"{root}: delete rows of dropped class {value!r}"
    # Foreign keys that go away first: their columns, parents or tables may be dropped below.
    for td in diff.tables:
        sql = [f"ALTER TABLE {q(td.old.name)} DROP CONSTRAINT {q(fk.name or '')}" for fk in td.dropped_fks]
        if sql:
            names = ", ".join(fk.name or "" for fk in td.dropped_fks)
            yield sql, td.name, f"{td.name}: drop foreign key {names}"
    for table in diff.dropped:
        sql = [f"ALTER TABLE {q(table.name)} DROP CONSTRAINT {q(fk.name or '')}" for fk in table.foreign_keys]
        if sql:
            yield sql, table.name, f"{table.name}: drop its foreign keys"
    for table in diff.dropped:
        yield [f"DROP TABLE {q(table.name)}"], table.name, f"drop table {table.name}"
    for td in diff.tables:
        yield from _renames(diff, td)
    for td in diff.tables:
        yield from _alter(diff, td)
    for table in diff.created:
        sql = [table.create_sql] + [i.create_sql for i in table.indexes if i.kind == "index" and i.create_sql]
        yield sql, table.name, f"create table {table.name}"
    for td in diff.tables:
        sql = [fk.create_sql for fk in td.added_fks if fk.create_sql]
        if sql:
            names = ", ".join(fk.name or "" for fk in td.added_fks)
            yield sql, td.name, f"{td.name}: add foreign key {names}"
    for table in diff.created:
        sql = [fk.create_sql for fk in table.foreign_keys if fk.create_sql]
        if sql:
            yield sql, table.name, f"{table.name}: add its foreign keys"
    for root, column, old, new in diff.hints.discriminator_updates:
        statement = f"UPDATE {q(root)} SET {q(column)} = {diff.lit(new)} WHERE {q(column)} = {diff.lit(old)}"
        yield [statement], root, f"{root}: discriminator {old!r} -> {new!r}"


def _renames(diff: Diff, td: TableDiff) -> Iterator[StepSpec]:
    q, t = diff.q, td.name
    # A column renamed onto the name of a dropped one: drop that one first (its indexes go with it).
    sql = [f"ALTER TABLE {q(td.old.name)} DROP COLUMN {q(c.name)}" for c in td.replaced]
    what = [f"drop column {c.name}" for c in td.replaced]
    if td.renamed_table:
        sql.append(f"ALTER TABLE {q(td.old.name)} RENAME TO {q(t)}")
        what.append(f"rename table {td.old.name} -> {t}")
        sql.append(f"ALTER INDEX {q(_pg_name(td.old.name + '_pkey'))} RENAME TO {q(_pg_name(t + '_pkey'))}")
    for old, new in td.renamed:
        sql.append(f"ALTER TABLE {q(t)} RENAME COLUMN {q(old)} TO {q(new)}")
        what.append(f"rename column {old} -> {new}")
    # Names PostgreSQL derived from the old table and column names.
    for old_col in td.old.columns:
        if old_col.name not in td.old_of.values() or not old_col.auto:
            continue
        new_col = next(n for n, o in td.old_of.items() if o == old_col.name)
        before, after = _pg_name(f"{td.old.name}_{old_col.name}_seq"), _pg_name(f"{t}_{new_col}_seq")
        if before != after:
            sql.append(f"ALTER SEQUENCE {q(before)} RENAME TO {q(after)}")
    for old_index, new_index in td.kept_indexes + td.index_renames:
        if old_index.name is None and old_index.unique and not old_index.primary:
            before = _unique_name(td.old.name, old_index.columns[0])
            after = _unique_name(t, new_index.columns[0])
            if before != after:
                sql.append(f"ALTER TABLE {q(t)} RENAME CONSTRAINT {q(before)} TO {q(after)}")
    for old_index, new_index in td.index_renames:
        if old_index.name is None or new_index.name is None:
            continue
        if old_index.kind == "inline":
            sql.append(f"ALTER TABLE {q(t)} RENAME CONSTRAINT {q(old_index.name)} TO {q(new_index.name)}")
        else:
            sql.append(f"ALTER INDEX {q(old_index.name)} RENAME TO {q(new_index.name)}")
        what.append(f"rename index {old_index.name} -> {new_index.name}")
    for old_fk, new_fk in td.fk_renames:
        sql.append(f"ALTER TABLE {q(t)} RENAME CONSTRAINT {q(old_fk.name or '')} TO {q(new_fk.name or '')}")
        what.append(f"rename foreign key {old_fk.name} -> {new_fk.name}")
    if sql:
        yield sql, t, f"{t}: " + ("; ".join(what) if what else "rename derived names")


def _add_column(diff: Diff, td: TableDiff, col: PhysicalColumn) -> tuple[list[str], str]:
    q, t = diff.q, td.name
    if col.name not in td.backfills:
        return [f"ALTER TABLE {q(t)} ADD COLUMN {col.definition}"], f"add column {col.name}"
    value = td.backfills[col.name]
    parts = [q(col.name), col.sql_type, "DEFAULT", diff.lit(value, col.sql_type)]
    parts += ["UNIQUE"] if col.unique else []
    parts += ["NOT NULL"] if col.not_null else []
    sql = [f"ALTER TABLE {q(t)} ADD COLUMN {' '.join(parts)}"]
    if col.default is None:
        sql.append(f"ALTER TABLE {q(t)} ALTER COLUMN {q(col.name)} DROP DEFAULT")
    else:
        sql.append(f"ALTER TABLE {q(t)} ALTER COLUMN {q(col.name)} SET DEFAULT {col.default}")
    return sql, f"add column {col.name} (backfill {value!r})"


_SERIALS = {"SMALLSERIAL": "SMALLINT", "SERIAL": "INTEGER", "BIGSERIAL": "BIGINT"}


def _real_type(col: PhysicalColumn) -> str:
    """The type PostgreSQL gives the column: Pony 0.7.20 writes SERIAL for every auto int (even size=64)."""
    if col.auto:
        words = col.definition.split()
        if len(words) > 1 and words[1].upper() in _SERIALS:
            return _SERIALS[words[1].upper()]
    return col.sql_type


def _alter_column(
    diff: Diff, td: TableDiff, old: PhysicalColumn, new: PhysicalColumn
) -> tuple[list[str], str]:
    q, t, c = diff.q, td.name, diff.q(new.name)
    sql: list[str] = []
    what: list[str] = []
    if _real_type(old) != _real_type(new):
        sql.append(
            f"ALTER TABLE {q(t)} ALTER COLUMN {c} TYPE {new.sql_type} USING CAST({c} AS {new.sql_type})"
        )
        what.append(f"type {old.sql_type} -> {new.sql_type}")
    if old.default != new.default:
        if new.default is None:
            sql.append(f"ALTER TABLE {q(t)} ALTER COLUMN {c} DROP DEFAULT")
        else:
            sql.append(f"ALTER TABLE {q(t)} ALTER COLUMN {c} SET DEFAULT {new.default}")
        what.append(f"default {new.default}")
    if old.not_null != new.not_null:
        if new.not_null:
            if new.name in td.backfills:
                value = td.backfills[new.name]
                sql.append(f"UPDATE {q(t)} SET {c} = {diff.lit(value, new.sql_type)} WHERE {c} IS NULL")
                what.append(f"backfill {value!r}")
            sql.append(f"ALTER TABLE {q(t)} ALTER COLUMN {c} SET NOT NULL")
            what.append("NOT NULL")
        else:
            sql.append(f"ALTER TABLE {q(t)} ALTER COLUMN {c} DROP NOT NULL")
            what.append("nullable")
            if new.name in td.emptied:
                sql.append(f"UPDATE {q(t)} SET {c} = NULL WHERE {c} = ''")
                what.append("'' -> NULL")
    return sql, f"alter column {new.name} ({', '.join(what)})"


def _drop_index(diff: Diff, td: TableDiff, index: PhysicalIndex) -> str | None:
    q, t = diff.q, td.name
    if any(c not in td.old_of.values() for c in index.columns):
        return None  # dropped with its column
    if index.primary:
        return f"ALTER TABLE {q(t)} DROP CONSTRAINT {q(_pg_name(t + '_pkey'))}"
    if index.name is None:  # PostgreSQL's name, from the old names: only kept constraints are renamed
        return f"ALTER TABLE {q(t)} DROP CONSTRAINT {q(_unique_name(td.old.name, index.columns[0]))}"
    if index.kind == "inline":
        return f"ALTER TABLE {q(t)} DROP CONSTRAINT {q(index.name)}"
    return f"DROP INDEX {q(index.name)}"


def _add_index(diff: Diff, td: TableDiff, index: PhysicalIndex) -> str:
    q, t = diff.q, td.name
    if index.kind == "index" and index.create_sql:
        return index.create_sql
    if index.constraint_sql:
        return f"ALTER TABLE {q(t)} ADD {index.constraint_sql}"
    cols = ", ".join(q(c) for c in index.columns)
    return f"ALTER TABLE {q(t)} ADD {'PRIMARY KEY' if index.primary else 'UNIQUE'} ({cols})"


def _alter(diff: Diff, td: TableDiff) -> Iterator[StepSpec]:
    q, t = diff.q, td.name
    sql: list[str] = []
    what: list[str] = []
    for index in td.dropped_indexes:
        statement = _drop_index(diff, td, index)
        if statement:
            sql.append(statement)
            what.append(
                f"drop {'unique ' if index.unique else ''}index {index.name or ', '.join(index.columns)}"
            )
    replaced = {c.name for c in td.replaced}
    for col in td.dropped:
        if col.name in replaced:
            continue  # dropped before the renames
        sql.append(f"ALTER TABLE {q(t)} DROP COLUMN {q(col.name)}")
        what.append(f"drop column {col.name}")
    for col in td.added:
        statements, text = _add_column(diff, td, col)
        sql += statements
        what.append(text)
    for old, new in td.altered:
        statements, text = _alter_column(diff, td, old, new)
        if statements:
            sql += statements
            what.append(text)
    for index in td.added_indexes:
        if any(c in {a.name for a in td.added} for c in index.columns) and index.name is None:
            continue  # a single-column UNIQUE came inline with ADD COLUMN
        sql.append(_add_index(diff, td, index))
        what.append(f"add {'unique ' if index.unique else ''}index {index.name or ', '.join(index.columns)}")
    if sql:
        yield sql, t, f"{t}: " + "; ".join(what)
