"""count_queries, assert_max_queries and detect_n_plus_one on every backend."""

from __future__ import annotations

import threading
from collections.abc import Callable
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
from ponykit.errors import ConfigurationError, QueryCountExceeded


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


def test_query_count_errors_never_show_parameter_values(m: Any) -> None:
    """A bound value (it may be a password, a sensitive or an encrypted value) never reaches the message
    of QueryCountExceeded, nor a Statement's repr; the statement's text and its parameter count do."""
    author, _ = m
    secret = "SECRET-PARAM-4711"
    with pytest.raises(QueryCountExceeded) as info, db_session, assert_max_queries(0) as counter:
        list(select(a for a in author if a.name == secret))
    message = str(info.value)
    assert secret not in message
    assert "1 parameter(s)" in message
    assert "SELECT" in message.upper()
    assert secret not in repr(counter.statements[0])
    assert secret in str(counter.statements[0].params)  # still there for the test that asks for it


def test_nested_counters_and_other_threads(m: Any) -> None:
    """Nested counters both count; another thread's statements count by default, not with "current"."""
    author, _ = m

    def other() -> None:
        with db_session:
            list(author.select())

    with count_queries() as outer, count_queries(threads="current") as own:
        with db_session:
            list(author.select())
            with count_queries() as inner:
                list(select(a for a in author if a.id > 2))
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
    assert inner.count == 1
    assert outer.count == 3
    assert own.count == 2
    assert own.other_threads == 1
    assert outer.statements[-1].thread == worker.name


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


# ---------------------------------------------------------------------------------------------------------
# Work done on other threads (issue #12 item 17: a TestClient request used to count 0 statements)


def _lazy_loop(author: Any) -> int:
    """An N+1 loop: one SELECT of the authors, then one load of the lazy ``bio`` per author."""
    with db_session:
        return len([a.bio for a in author.select()])


def _in_thread(target: Callable[[], Any]) -> None:
    worker = threading.Thread(target=target, name="pk-test-worker")
    worker.start()
    worker.join()


def test_statements_of_another_thread_are_counted_by_default(m: Any) -> None:
    """count_queries, assert_max_queries and detect_n_plus_one see a plain thread's N+1 loop (1 + 6)."""
    author, _ = m
    with count_queries() as counter:
        _in_thread(lambda: _lazy_loop(author))
    assert counter.count == 7
    assert {s.thread for s in counter.statements} == {"pk-test-worker"}
    with (
        pytest.raises(QueryCountExceeded, match=r"at most 1 SQL statement\(s\), 7 ran"),
        assert_max_queries(1),
    ):
        _in_thread(lambda: _lazy_loop(author))
    with pytest.raises(NPlusOneDetected, match=r"Author\.bio") as info, detect_n_plus_one(threshold=3):
        _in_thread(lambda: _lazy_loop(author))
    assert info.value.findings[0].count == 6


def test_other_threads_count_only_inside_the_block(m: Any) -> None:
    """A thread's statements finished before the block opened or after it closed are not counted."""
    author, _ = m
    done_before, go_inside, done_inside, go_after = (threading.Event() for _ in range(4))

    def worker() -> None:
        with db_session:
            list(author.select())  # before the block
        done_before.set()
        go_inside.wait()
        with db_session:
            author.get(name="a1")  # inside
        done_inside.set()
        go_after.wait()
        with db_session:
            list(author.select())  # after

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert done_before.wait(timeout=60)
        with count_queries() as counter:
            go_inside.set()
            assert done_inside.wait(timeout=60)
    finally:
        go_after.set()
        thread.join()
    assert counter.count == 1
    assert "a1" in str(counter.statements[0].params)


def test_current_thread_mode_fails_loudly_when_the_work_ran_elsewhere(m: Any) -> None:
    """threads="current" ignores other threads, and refuses to pass when only other threads ran SQL."""
    author, _ = m
    with count_queries(threads="current") as counter:
        _in_thread(lambda: _lazy_loop(author))
    assert (counter.count, counter.other_threads) == (0, 7)
    with (
        pytest.raises(QueryCountExceeded, match="saw no SQL statement on this thread"),
        assert_max_queries(1, threads="current"),
    ):
        _in_thread(lambda: _lazy_loop(author))
    with (
        pytest.raises(QueryCountExceeded, match="saw no SQL statement on this thread"),
        detect_n_plus_one(threshold=3, threads="current"),
    ):
        _in_thread(lambda: _lazy_loop(author))
    with assert_max_queries(1, threads="current") as own:  # own statement within the limit: passes
        with db_session:
            list(author.select())
        _in_thread(lambda: _lazy_loop(author))
    assert own.count == 1
    with pytest.raises(ConfigurationError, match="threads"), count_queries(threads="every"):  # type: ignore[arg-type]
        pass


# Starlette >= 1.x prefers the httpx2 package and warns when it falls back to httpx (the dev extra's).
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")
def test_fastapi_test_client_request_is_counted(m: Any) -> None:
    """A sync FastAPI endpoint runs in a worker thread: its 1 + 20 statements are counted and flagged."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    author, _ = m
    with db_session:
        for i in range(6, 20):
            author(name=f"a{i}", bio="x")

    app = FastAPI()

    @app.get("/authors")
    @db_session
    def authors() -> list[dict[str, Any]]:
        return [{"name": a.name, "bio": a.bio} for a in author.select()]  # 1 + 20 (lazy bio)

    with TestClient(app) as client:
        with count_queries() as counter:
            response = client.get("/authors")
        assert response.status_code == 200
        assert len(response.json()) == 20
        assert counter.count == 21
        assert threading.current_thread().name not in {s.thread for s in counter.statements}
        with (
            pytest.raises(QueryCountExceeded, match=r"at most 1 SQL statement\(s\), 21 ran"),
            assert_max_queries(1),
        ):
            client.get("/authors")
        with pytest.raises(NPlusOneDetected, match=r"Author\.bio") as info, detect_n_plus_one(threshold=3):
            client.get("/authors")
        assert info.value.findings[0].count == 20
        with (
            pytest.raises(QueryCountExceeded, match="saw no SQL statement on this thread"),
            assert_max_queries(1, threads="current"),
        ):
            client.get("/authors")


def test_install_is_idempotent(db: Database) -> None:
    """``diagnostics.install(kit)`` (what attach() runs, at every call) adds the listener once, however
    often it is called: each statement counts once."""
    from ponykit.diagnostics import _capture

    class Thing(db.Entity):
        name = Required(str)

    kit = pk.attach(db)
    db.generate_mapping(create_tables=True)
    _capture.install(kit)
    _capture.install(kit)
    with db_session, count_queries(db) as counter:
        select(t for t in Thing)[:]
    assert counter.count == 1


def test_diagnostics_argument_errors_are_option_errors() -> None:
    """Wrong arguments of the diagnostics helpers raise OptionError: a ConfigurationError (as before),
    and the ValueError and TypeError they raised before."""
    for call in (
        lambda: assert_max_queries(-1),
        lambda: assert_max_queries("3"),  # type: ignore[arg-type]
        lambda: detect_n_plus_one(1).__enter__(),
        lambda: count_queries(threads="some").__enter__(),  # type: ignore[arg-type]
    ):
        with pytest.raises(pk.OptionError) as info:
            call()
        assert isinstance(info.value, ConfigurationError)
        assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)
