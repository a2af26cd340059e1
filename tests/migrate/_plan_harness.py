"""The planner's oracle on a live backend: migrate a database made by Pony from model A to model B with the
planned steps, then compare it with a database Pony creates fresh from model B.

Model A and model B are functions declaring entities on a given ``Database``. The comparison reads the
catalogs directly (names, types, nullability, defaults, indexes, unique constraints, foreign keys; column
order and backend-chosen names ignored, except PostgreSQL's ``t_pkey``/``t_col_key``/``t_col_seq``).
"""

from __future__ import annotations

import importlib.util
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote as urlquote
from urllib.parse import urlsplit, urlunsplit

from pony.orm import Database

import ponykit
from ponykit._pony import map_offline, physical_schema
from ponykit.migrate._hints import Hints
from ponykit.migrate._plan import Plan, plan

Model = Callable[[Database], None]


def connect(backend_name: str, url: str) -> Any:
    """A plain DB-API connection to ``url`` (PostgreSQL and SQLite: not autocommit; MariaDB: autocommit)."""
    _provider, kwargs = ponykit.parse_url(url)
    if backend_name == "sqlite":
        return sqlite3.connect(kwargs["filename"], isolation_level=None)
    if backend_name == "postgres":
        import psycopg2

        return psycopg2.connect(**kwargs)
    import pymysql

    kwargs.pop("options", None)
    if "db" in kwargs:  # pymysql's old spelling, which it warns about
        kwargs["database"] = kwargs.pop("db")
    return pymysql.connect(autocommit=True, **kwargs)


def offline(model: Model, dialect: str) -> Any:
    """Model's physical schema for ``dialect``."""
    db = Database()
    model(db)
    map_offline(db, dialect)
    return physical_schema(db)


def run(backend_name: str, url: str, migration: Plan) -> list[int]:
    """Run the checks (returning their counts; DDL only if all are 0) and the steps of ``migration``."""
    con = connect(backend_name, url)
    try:
        cur = con.cursor()
        counts = []
        for check in migration.checks:
            cur.execute(check.sql)
            counts.append(cur.fetchone()[0])
        if any(counts):
            return counts
        if backend_name == "sqlite":
            cur.execute("PRAGMA foreign_keys=OFF")
            cur.execute("BEGIN")
        for statement in migration.statements:
            try:
                cur.execute(statement)
            except Exception as exc:
                raise AssertionError(f"{statement}\n-> {exc}\nplan:\n{migration}") from exc
        if backend_name == "sqlite":
            cur.execute("PRAGMA foreign_key_check")
            problems = cur.fetchall()
            assert not problems, problems
            cur.execute("COMMIT")
        elif backend_name == "postgres":
            con.commit()
        return counts
    finally:
        con.close()


@contextmanager
def second_database(backend_name: str, url: str) -> Iterator[str]:
    """A second isolated database beside ``url``'s (for the fresh model B)."""
    if backend_name == "sqlite":
        yield url.replace("test.db", "fresh.db")
        return
    name = "pkb_" + uuid.uuid4().hex[:12]
    con = connect(backend_name, url)
    if backend_name == "postgres":
        con.autocommit = True
    cur = con.cursor()
    if backend_name == "postgres":
        cur.execute(f'CREATE SCHEMA "{name}"')
        parts = urlsplit(url)
        query = re.sub(r"search_path%3D\w+", f"search_path%3D{name}", parts.query)
        other = urlunsplit(parts._replace(query=query))
        drop = f'DROP SCHEMA IF EXISTS "{name}" CASCADE'
    else:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        other = urlunsplit(urlsplit(url)._replace(path="/" + urlquote(name)))
        drop = f"DROP DATABASE IF EXISTS `{name}`"
    try:
        yield other
    finally:
        cur.execute(drop)
        con.close()


def create(model: Model, url: str, create_tables: bool = True) -> Database:
    """Model declared on a fresh Database bound to ``url`` (its tables created by Pony unless told)."""
    db = Database()
    model(db)
    ponykit.bind_url(db, url)
    db.generate_mapping(create_tables=create_tables, check_tables=True)
    return db


def release(db: Database) -> None:
    """Disconnect ``db`` and forget it."""
    db.disconnect()
    ponykit.kit.forget(db)


def migrate(
    backend_name: str,
    url: str,
    model_a: Model,
    model_b: Model,
    hints: Hints,
    fill: Callable[[Database], None],
) -> tuple[Plan, list[int]]:
    """Create model A at ``url``, fill it, plan to model B and run the plan; the plan and check counts."""
    db = create(model_a, url)
    fill(db)
    before = physical_schema(db)
    release(db)
    after = offline(model_b, backend_name)
    migration = plan(before, after, hints)
    return migration, run(backend_name, url, migration)


def catalog(backend_name: str, url: str) -> dict[str, Any]:
    """The comparable description of every table at ``url``."""
    con = connect(backend_name, url)
    try:
        return {"sqlite": _sqlite, "postgres": _postgres, "mysql": _mysql}[backend_name](con.cursor())
    finally:
        con.close()


def rows(backend_name: str, url: str, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` at ``url``."""
    con = connect(backend_name, url)
    try:
        cur = con.cursor()
        cur.execute(sql)
        return [tuple(r) for r in cur.fetchall()]
    finally:
        con.close()


def _sqlite(cur: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    cur.execute("SELECT name, sql FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")
    for name, sql in cur.fetchall():
        cur.execute(f'PRAGMA table_xinfo("{name}")')
        columns = {r[1]: (r[2], bool(r[3]) or bool(r[5]), r[4]) for r in cur.fetchall()}
        indexes = set()
        cur.execute(f'PRAGMA index_list("{name}")')
        for _seq, iname, unique, origin, _partial in cur.fetchall():
            cur.execute(f'PRAGMA index_info("{iname}")')
            cols = tuple(r[2] for r in cur.fetchall())
            indexes.add((None if iname.startswith("sqlite_autoindex") else iname, cols, bool(unique), origin))
        cur.execute(f'PRAGMA foreign_key_list("{name}")')
        fks: dict[int, list[Any]] = {}
        for fid, _seq, parent, src, dst, _upd, on_delete, _match in cur.fetchall():
            fks.setdefault(fid, [parent, [], [], on_delete])
            fks[fid][1].append(src)
            fks[fid][2].append(dst)
        fk_set = {(p, tuple(s), tuple(d), od) for p, s, d, od in fks.values()}
        constraints = tuple(sorted(re.findall(r'CONSTRAINT "([^"]+)"', sql)))
        result[name] = {
            "columns": columns,
            "indexes": indexes,
            "fks": fk_set,
            "constraints": constraints,
            "autoincrement": "AUTOINCREMENT" in sql.upper(),
        }
    return result


def _postgres(cur: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    cur.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
        " pg_get_expr(d.adbin, d.adrelid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
        " LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum"
        " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
    )
    for table, col, typ, notnull, default in cur.fetchall():
        entry = result.setdefault(
            table, {"columns": {}, "indexes": set(), "fks": set(), "constraints": set()}
        )
        entry["columns"][col] = (typ, notnull, default)
    cur.execute(
        "SELECT t.relname, i.relname, ix.indisunique, ix.indisprimary,"
        " ARRAY(SELECT a.attname FROM unnest(ix.indkey) WITH ORDINALITY k(n, o)"
        "  JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.n ORDER BY k.o)"
        " FROM pg_index ix JOIN pg_class t ON t.oid = ix.indrelid JOIN pg_class i ON i.oid = ix.indexrelid"
        " JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = current_schema()"
    )
    for table, name, unique, primary, cols in cur.fetchall():
        result[table]["indexes"].add((name, tuple(cols), unique, primary))
    cur.execute(
        "SELECT t.relname, c.conname, c.contype, pg_get_constraintdef(c.oid) FROM pg_constraint c"
        " JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
        " WHERE n.nspname = current_schema()"
    )
    for table, name, kind, definition in cur.fetchall():
        key = "fks" if kind == "f" else "constraints"
        result[table][key].add((name, kind, definition))
    cur.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind = 'S'"
    )
    result["<sequences>"] = sorted(r[0] for r in cur.fetchall())
    return result


def _mysql(cur: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    cur.execute(
        "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA"
        " FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
    )
    for table, col, typ, nullable, default, extra in cur.fetchall():
        entry = result.setdefault(table, {"columns": {}, "indexes": set(), "fks": set()})
        entry["columns"][col] = (typ, nullable, default, extra)
    cur.execute(
        "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX)"
        " FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE()"
        " GROUP BY TABLE_NAME, INDEX_NAME, NON_UNIQUE"
    )
    for table, name, non_unique, cols in cur.fetchall():
        # A single-column UNIQUE is named after its column (the planner keeps it so on renames)
        named = name == "PRIMARY" or name.startswith(("idx_", "unq_", "fk_")) or name == cols
        result[table]["indexes"].add((name if named else None, cols, not non_unique))
    cur.execute(
        "SELECT k.TABLE_NAME, k.CONSTRAINT_NAME, GROUP_CONCAT(k.COLUMN_NAME ORDER BY k.ORDINAL_POSITION),"
        " k.REFERENCED_TABLE_NAME, GROUP_CONCAT(k.REFERENCED_COLUMN_NAME ORDER BY k.ORDINAL_POSITION),"
        " r.DELETE_RULE FROM information_schema.KEY_COLUMN_USAGE k"
        " JOIN information_schema.REFERENTIAL_CONSTRAINTS r ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA"
        "  AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME AND r.TABLE_NAME = k.TABLE_NAME"
        " WHERE k.TABLE_SCHEMA = DATABASE() GROUP BY k.TABLE_NAME, k.CONSTRAINT_NAME,"
        " k.REFERENCED_TABLE_NAME, r.DELETE_RULE"
    )
    for table, name, cols, parent, pcols, rule in cur.fetchall():
        result[table]["fks"].add((name, cols, parent, pcols, rule))
    return result


def introspected(backend_name: str, url: str) -> Any:
    """The live schema at ``url`` read by ``ponykit.migrate._introspect`` (H5's introspection)."""
    from ponykit.migrate._introspect import introspect

    con = connect(backend_name, url)
    try:
        return introspect(con, backend_name)
    finally:
        con.close()


def assert_same_as_fresh(backend_name: str, url: str, model: Model) -> None:
    """The database at ``url`` equals one Pony creates fresh from ``model``: by this file's catalog reading
    (every name, PostgreSQL's backend-chosen ones included) and by ``_compare.compare`` of the
    introspected schemas."""
    live = importlib.util.find_spec("ponykit.migrate._compare") is not None  # H5's, merged at ~16:00
    with second_database(backend_name, url) as other:
        release(create(model, other))
        expected_catalog = catalog(backend_name, other)
        expected = introspected(backend_name, other) if live else None
    assert_same(catalog(backend_name, url), expected_catalog)
    if expected is None:
        return
    from ponykit.migrate._compare import compare

    differences = compare(expected, introspected(backend_name, url))
    assert not differences, "\n".join(map(str, differences))


def assert_same(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Assert two catalogs are equal, naming the first difference."""
    assert sorted(actual) == sorted(expected), "tables differ"
    for table in expected:
        if isinstance(expected[table], list):
            assert actual[table] == expected[table], table
            continue
        for key in expected[table]:
            assert actual[table][key] == expected[table][key], f"{table}.{key}"
