"""Which statements write, and which reads may write after all (``ponykit.transactions._statements``).

``is_write_statement`` decides whether a lost connection lost work and what a replica session refuses;
``may_write_when_read`` tells a commit that a read may have written through a function it called, so the
read-your-writes pin is taken (``ponykit.binding``). Both err towards "write": the tests check the
statements that write are seen, and that the SQL Pony generates for ordinary queries is a plain read.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import Database, Optional, Required, Set, avg, count, db_session, desc, exists, max, select, sum

import ponykit as pk
from ponykit.transactions import _statements
from ponykit.transactions._statements import is_write_statement, may_write_when_read

WRITES = (
    "UPDATE t SET x = 1",
    "INSERT INTO t VALUES (1)",
    "DELETE FROM t",
    "CREATE TABLE u (x int)",
)


@given(read=st.sampled_from(("SELECT 1", "select x from t", "SHOW tables")), write=st.sampled_from(WRITES))
def test_several_statements_in_one_text_count_as_a_write(read: str, write: str) -> None:
    assert is_write_statement(f"{read}; {write}")
    assert is_write_statement(f"{read};{write};")
    assert not is_write_statement(f"{read};")  # one statement and its terminator
    assert not is_write_statement(f"{read}; \n ")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * INTO account_copy FROM account",  # PostgreSQL: a new table
        "select id into temp t2 from t",
        "SELECT a FROM t INTO @v",  # MariaDB: variables
        "SELECT a FROM t WHERE id IN (" + ", ".join(map(str, range(3000))) + ") INTO OUTFILE '/tmp/x'",
    ],
)
def test_select_into_counts_as_a_write(sql: str) -> None:
    assert is_write_statement(sql)


def test_a_column_named_like_into_is_still_a_read() -> None:
    assert not is_write_statement('SELECT "into_date", "t"."intox" FROM "t" "t"')


@pytest.mark.parametrize(
    ("sql", "runs"),
    [
        ("EXPLAIN SELECT * FROM t", False),
        ("EXPLAIN ANALYZE UPDATE t SET x = 1", True),
        ("EXPLAIN ANALYSE UPDATE t SET x = 1", True),  # PostgreSQL takes the British spelling too
        ("explain (costs off, timing off, summary off, buffers, analyze) update t set x = 1", True),
        ("EXPLAIN (FORMAT JSON) SELECT 1", False),
    ],
)
def test_explain_counts_as_a_write_when_its_options_run_the_statement(sql: str, runs: bool) -> None:
    assert is_write_statement(sql) is runs


@pytest.mark.parametrize(
    ("sql", "unsure"),
    [
        ("SELECT 1", False),
        ("SELECT count(*) FROM t", False),
        ('SELECT coalesce(max("x"."id"), 0) FROM "x" "x"', False),
        ("SELECT x FROM t WHERE EXISTS (SELECT 1 FROM u) AND y IN (1, 2)", False),
        ("SELECT bump(14)", True),  # a function of the application's: it may write
        ("SELECT public.bump(1)", True),
        ('SELECT "bump"(1)', True),
        ("SELECT `bump`(1)", True),
        ("SELECT nextval('s')", True),
        ("SELECT pg_advisory_lock(1)", True),
        ("SELECT x FROM t WHERE id IN (" + ", ".join(map(str, range(3000))) + ") AND bump(x) > 0", True),
    ],
)
def test_reads_calling_unknown_functions_may_write(sql: str, unsure: bool) -> None:
    assert not is_write_statement(sql)
    assert may_write_when_read(sql) is unsure
    assert _statements.may_write_when_read_memo(sql) is unsure
    assert _statements.may_write_when_read_memo(sql) is unsure  # from the memo when short


def test_the_sql_pony_generates_for_ordinary_queries_is_a_plain_read(db: Database) -> None:
    """An oracle over Pony's own SQL on each backend: queries of every common shape (filters, string and
    date methods, aggregates, subqueries, ordering, paging) are reads that call no unknown function, so
    their commits need no pin."""

    class Author(db.Entity):
        name = Required(str)
        books = Set("Book")

    class Book(db.Entity):
        title = Required(str)
        pages = Required(int)
        price = Required(Decimal, 10, 2)
        published = Required(dt.datetime)
        note = Optional(str, nullable=True)
        author = Required(Author)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    seen: list[str] = []
    pk.get_kit(db).add_execute_listener(lambda _db, sql, *_: seen.append(sql))
    with db_session:
        a = Author(name="Ann")
        Book(title="One", pages=10, price=Decimal("1.50"), published=dt.datetime(2024, 5, 1), author=a)
    seen.clear()
    queries: list[Any] = [
        lambda: select(b for b in Book)[:],
        lambda: select(b for b in Book if b.title.startswith("O") and b.pages > 5)[:],
        lambda: select(b for b in Book if b.title.lower() == "one" or b.title.upper() in ("X", "Y"))[:],
        lambda: select(b for b in Book if len(b.title) > 1 and "n" in b.title)[:],
        lambda: select(b for b in Book if b.published.year == 2024 and b.published.month > 1)[:],
        lambda: select(b for b in Book if b.note is None).order_by(desc(Book.pages)).page(1, 10),
        lambda: select(b for b in Book).random(1),
        lambda: count(b for b in Book if b.price > 1),
        lambda: max(b.pages for b in Book),
        lambda: sum(b.price for b in Book),
        lambda: avg(b.pages for b in Book),
        lambda: select((b.author, count(b)) for b in Book)[:],
        lambda: select(a for a in Author if exists(b for b in a.books if b.pages > 3))[:],
        lambda: select(a for a in Author if count(a.books) > 0)[:],
        lambda: Book.get(title="One"),
        lambda: Book.exists(pages=10),
        lambda: Author[a.id].books.count(),
        lambda: select(b.title for b in Book if b.title[1:] == "ne").first(),
    ]
    for query in queries:
        with db_session:
            query()
    reads = [sql for sql in seen if sql.lstrip().upper().startswith("SELECT")]
    assert len(reads) >= len(queries)
    for sql in reads:
        assert not is_write_statement(sql), sql
        assert not may_write_when_read(sql), sql
