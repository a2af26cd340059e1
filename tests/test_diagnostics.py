"""count_queries, assert_max_queries and detect_n_plus_one on every backend."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pony.orm import Database, LongStr, Optional, Required, Set, db_session, select

import ponykit as pk
from ponykit.diagnostics import (
    NPlusOneDetected,
    assert_max_queries,
    count_queries,
    detect_n_plus_one,
    statement_shape,
)
from ponykit.errors import QueryCountExceeded


@pytest.fixture
def m(db: Database) -> Any:
    class Author(db.Entity):
        name = Required(str)
        bio = Optional(LongStr)
        books = Set("Book")

    class Book(db.Entity):
        title = Required(str)
        author = Required(Author)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        for i in range(6):
            a = Author(name=f"a{i}", bio="b" * i)
            Book(title=f"t{i}", author=a)
    return Author, Book


def test_count_queries_counts_statements_with_params(m: Any) -> None:
    """Each executed statement is counted with its SQL and bound parameters; cached results are not."""
    author, _ = m
    with db_session, count_queries() as counter:
        wanted = "a1"
        list(select(a for a in author if a.name == wanted))
        author.get(name="a2")
        assert counter.count == 2
    assert "a1" in str(counter.statements[0].params)
    assert counter.statements[0].sql.lstrip().upper().startswith("SELECT")


def test_nested_counters_and_other_threads(m: Any) -> None:
    """Nested counters both count; statements of another thread are not counted."""
    author, _ = m

    def other() -> None:
        with db_session:
            list(author.select())

    with count_queries() as outer:
        with db_session:
            list(author.select())
            with count_queries() as inner:
                list(select(a for a in author if a.id > 2))
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
    assert inner.count == 1
    assert outer.count == 2


def test_assert_max_queries_context_manager_and_decorator(m: Any) -> None:
    """Within the limit passes; above it raises QueryCountExceeded listing the statements."""
    author, _ = m
    with db_session:
        with assert_max_queries(1):
            list(author.select())

        @assert_max_queries(1)
        def two() -> None:
            list(select(a for a in author if a.id == 1))
            list(select(a for a in author if a.id == 2))

        with pytest.raises(QueryCountExceeded, match=r"at most 1 SQL statement\(s\), 2 ran") as info:
            two()
        assert "1. SELECT" in str(info.value)
        assert "2. SELECT" in str(info.value)
        assert isinstance(info.value, AssertionError)


def test_lazy_attribute_n_plus_one_is_named(m: Any) -> None:
    """Reading a lazy column in a loop is flagged, naming Author.bio."""
    author, _ = m
    with (
        db_session,
        pytest.raises(NPlusOneDetected, match=r"Author\.bio") as info,
        detect_n_plus_one(threshold=3),
    ):
        for a in author.select():
            _ = a.bio
    finding = info.value.findings[0]
    assert (finding.entity, finding.attribute, finding.count) == ("Author", "bio", 6)


def test_foreign_key_loop_is_named(m: Any) -> None:
    """A query per parent filtering children by foreign key is flagged, naming Author.books."""
    author, book = m
    with db_session, pytest.raises(NPlusOneDetected, match=r"Author\.books"), detect_n_plus_one(threshold=3):
        for a in author.select():
            list(select(b for b in book if b.author == a))


def test_prefetched_loop_is_clean(m: Any) -> None:
    """After prefetch the same loop runs no repeated statement, so nothing is flagged."""
    author, _ = m
    with db_session:
        with detect_n_plus_one(threshold=3) as findings:
            for a in pk.prefetch(author.select(), "bio", "books"):
                _ = a.bio, len(a.books)
        assert findings == []


def test_same_parameters_or_below_threshold_are_not_flagged(m: Any) -> None:
    """Repeating the same statement with the same parameters, or fewer times than threshold, is fine."""
    author, _ = m
    with db_session:
        with detect_n_plus_one(threshold=3, raise_on_exit=False) as findings:
            for _ in range(4):
                author.select(lambda a: a.id == 1)[:]
                db_session  # noqa: B018
            for a in list(author.select())[:2]:
                _ = a.bio
        assert findings == []
    with pytest.raises(ValueError, match="threshold"), detect_n_plus_one(threshold=1):
        pass


def test_statement_shape_collapses_in_lists() -> None:
    """IN lists of any length and whitespace differences give one shape."""
    assert statement_shape('SELECT 1 FROM "a" WHERE "id" IN (?, ?)') == statement_shape(
        'SELECT 1\nFROM "a" WHERE "id" IN (?)'
    )
