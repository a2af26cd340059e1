"""Raw SQL writes invalidate the cache: every statement form of each dialect, table names with spaces,
dots and quotes, schema-qualified names, comments, several statements, and writes whose table cannot be
told (they invalidate everything)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pony.orm import Database, Required, db_session, select
from pony.orm import sum as psum

import ponykit as pk
from ponykit.query import cached_select
from ponykit.query._sqlwrites import ALL, written_tables
from ponykit.query.backends import MemoryCache

SHAPES = ["plain_t", "with space", "with.dot", 'with"quote', "with`tick"]


def quote(dialect: str, name: str) -> str:
    q = "`" if dialect == "mysql" else '"'
    return q + name.replace(q, q + q) + q


def forms(dialect: str, schema: str) -> list[Callable[[str], str]]:
    """Raw UPDATE statements on table ``t`` (quoted) that add 1 to every score, in this dialect's forms;
    the last ones are writes whose table a reader of the statement cannot attribute with certainty."""
    common: list[Callable[[str], str]] = [
        lambda t: f"UPDATE {t} SET score = score + 1",
        lambda t: f"/* audit */ UPDATE {t} SET score = score + 1",
        lambda t: f"-- audit\nUPDATE {t} SET score = score + 1 WHERE score <> -1 OR 'x;y' = 'x;y'",
        # Several statements in one execute: psycopg2 runs them all; the others take one.
        lambda t: (
            f"SELECT 1; UPDATE {t} SET score = score + 1"
            if dialect == "postgres"
            else f"UPDATE {t} SET score = score + 1;"
        ),
    ]
    if dialect == "postgres":
        return [
            *common,
            lambda t: f"UPDATE ONLY {t} SET score = score + 1",
            lambda t: f"UPDATE {quote(dialect, schema)}.{t} AS x SET score = x.score + 1",
            lambda t: f"WITH c AS (SELECT 1) UPDATE {t} SET score = score + 1",
        ]
    if dialect == "mysql":
        return [
            *common,
            lambda t: f"UPDATE LOW_PRIORITY {t} SET score = score + 1",
            lambda t: f"UPDATE IGNORE {quote(dialect, schema)}.{t} SET score = score + 1",
            lambda t: f"UPDATE {t} JOIN (SELECT 1 AS one) j SET score = score + j.one",
        ]
    return [
        *common,
        lambda t: f"UPDATE OR REPLACE {t} SET score = score + 1",
        lambda t: f"UPDATE main.{t} SET score = score + 1",
        lambda t: f"WITH c AS (SELECT 1) UPDATE {t} SET score = score + 1",
    ]


def test_raw_writes_of_every_form_invalidate(db: Database, backend: Any) -> None:
    """After each committed raw UPDATE (any form, any table name shape), the cached total is the truth."""
    entities = {
        shape: type(f"Thing{i}", (db.Entity,), {"_table_": shape, "score": Required(int)})
        for i, shape in enumerate(SHAPES)
    }
    pk.attach(db, cache=MemoryCache(ttl=None, single_process=True))
    db.generate_mapping(create_tables=True)
    with db_session:
        for entity in entities.values():
            entity(score=0)
        schema = db.select("SELECT current_schema()")[0] if backend.name == "postgres" else ""
        if backend.name == "mysql":
            schema = db.select("SELECT DATABASE()")[0]
    stale = []
    for shape, entity in entities.items():
        for i, form in enumerate(forms(backend.name, schema)):
            with db_session:
                before = cached_select(select(psum(t.score) for t in entity))
            with db_session:
                db.execute(form(quote(backend.name, shape)))
            with db_session:
                got = cached_select(select(psum(t.score) for t in entity))
                truth = select(psum(t.score) for t in entity)[:]
            if got != truth or got == before:
                stale.append((shape, i, before, got, truth))
    assert stale == []


def test_a_repeated_raw_write_text_invalidates_every_time(db: Database, backend: Any) -> None:
    """The write listener answers a text it has seen from its memo (before its session checks): the same
    UPDATE text run again still invalidates each time, and a SELECT text seen before stays a read."""
    thing = type("Thing", (db.Entity,), {"_table_": "repeat_t", "score": Required(int)})
    pk.attach(db, cache=MemoryCache(ttl=None, single_process=True))
    db.generate_mapping(create_tables=True)
    with db_session:
        thing(score=0)
    table = quote(backend.name, "repeat_t")
    for expected in (1, 2, 3):
        with db_session:
            before = cached_select(select(psum(t.score) for t in thing))
        with db_session:
            assert db.select(f"SELECT score FROM {table}") == before == [expected - 1]
            db.execute(f"UPDATE {table} SET score = score + 1")
        with db_session:
            assert cached_select(select(psum(t.score) for t in thing)) == [expected]


NAME = st.text(alphabet=st.sampled_from("ab_Z9 .\"`[]-;'/*é"), min_size=1, max_size=12)


def templates(dialect: str) -> list[str]:
    found = [
        "UPDATE {t} SET a = 1",
        "/* c */ UPDATE {t} AS x SET a = 'it''s; UPDATE'",
        "-- c\n  update {t} set a = 1",
        "DELETE FROM {t} WHERE a = ';'",
        "INSERT INTO {t} (a) VALUES (1)",
        "REPLACE INTO {t} VALUES (1)",
        "TRUNCATE TABLE {t}",
        "MERGE INTO {t} USING s ON 1 = 1 WHEN MATCHED THEN DELETE",
        "SELECT 1; UPDATE {t} SET a = 1",
        "ALTER TABLE {t} ADD b int",
        "DROP TABLE IF EXISTS {t}",
        "WITH c AS (SELECT 1) UPDATE {t} SET a = 1",
        "DELETE FROM {t}, other USING {t}",
    ]
    if dialect == "postgres":
        found += ["UPDATE ONLY {t} * SET a = 1", "COPY {t} (a, b) FROM STDIN", "TRUNCATE ONLY x, {t} *"]
    elif dialect == "mysql":
        found += [
            "UPDATE LOW_PRIORITY IGNORE {t} SET a = 1",
            "INSERT IGNORE INTO {t} VALUES (1)",
            "# c\nDELETE LOW_PRIORITY QUICK FROM {t}",
            "UPDATE {t} JOIN u ON 1 SET u.a = 1",
        ]
    else:
        found += ["UPDATE OR REPLACE {t} SET a = 1", "INSERT OR IGNORE INTO {t} VALUES (1)"]
    return found


@given(
    dialect=st.sampled_from(["sqlite", "postgres", "mysql"]),
    name=NAME,
    schema=st.none() | NAME,
    index=st.integers(0, 30),
)
@example(dialect="postgres", name='a"b . c', schema="s", index=0)
@example(dialect="mysql", name="a`b.c", schema=None, index=0)
def test_written_tables_finds_the_table_or_fails_safe(
    dialect: str, name: str, schema: str | None, index: int
) -> None:
    """For generated table names and statement forms, the detector names the table or answers ALL
    (invalidate everything); never "not a write", never another table only. Reads of the same table
    are not writes."""
    table = quote(dialect, name) if schema is None else f"{quote(dialect, schema)}.{quote(dialect, name)}"
    forms_ = templates(dialect)
    sql = forms_[index % len(forms_)].format(t=table)
    found = written_tables(sql, dialect)
    assert found is ALL or (found is not None and name.lower() in found), (sql, found)
    read = f"SELECT * FROM {table} WHERE a = 'UPDATE x SET a = 1; DELETE FROM y'"
    assert written_tables(read, dialect) is None


@pytest.mark.parametrize(
    "sql",
    [
        "CALL refresh_totals()",
        "WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d",
        "EXPLAIN ANALYZE UPDATE t SET a = 1",
        "LOAD DATA INFILE 'x' INTO TABLE t",
        "CREATE OR REPLACE TABLE t (a int)",
        "UPDATE t INDEXED BY i SET a = 1",
        "SELECT E'it\\'s'; UPDATE t SET a = 1",
        "RENAME TABLE t TO u",
        "DO $$ BEGIN UPDATE t SET a = 1; END $$",
    ],
)
def test_unattributable_writes_invalidate_everything(sql: str) -> None:
    """Statements that may write but whose tables cannot be told with certainty answer ALL."""
    assert written_tables(sql, "postgres") is ALL


def test_unattributable_raw_write_invalidates_every_entity(db: Database, backend: Any) -> None:
    """A committed write the detector cannot attribute invalidates every cached query of the Database."""
    a = type("A", (db.Entity,), {"score": Required(int)})
    b = type("B", (db.Entity,), {"score": Required(int)})
    pk.attach(db, cache=MemoryCache(ttl=None, single_process=True))
    db.generate_mapping(create_tables=True)
    with db_session:
        a(score=1)
        b(score=1)
    with db_session:
        assert cached_select(select(psum(x.score) for x in a)) == [1]
        assert cached_select(select(psum(x.score) for x in b)) == [1]
    with db_session:  # one statement the detector reads as an UPDATE it cannot attribute for certain
        table = quote(backend.name, str(b._table_))
        if backend.name == "mysql":
            db.execute(f"UPDATE {table} JOIN (SELECT 1 AS one) j SET score = score + j.one")
        else:
            db.execute(f"WITH c AS (SELECT 1) UPDATE {table} SET score = score + 1")
    with db_session:
        assert cached_select(select(psum(x.score) for x in b)) == [2]
        assert cached_select(select(psum(x.score) for x in a)) == [1]
