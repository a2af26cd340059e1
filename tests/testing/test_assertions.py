"""Statement assertions (issue #23 item 5): assert_sql_contains and SQL snapshots, on every backend."""

from __future__ import annotations

import re
import threading
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from pony.orm import Database, Required, db_session, select

import ponykit as pk
from ponykit.errors import OptionError, StatementMismatch
from ponykit.testing import assert_sql_contains, capture_statements
from ponykit.testing._assertions import normalize_sql

pytest_plugins = ["pytester"]


@pytest.fixture
def book(db: Database) -> Any:
    class Book(db.Entity):  # type: ignore[name-defined,misc]
        title = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        Book(title="a")
    return Book


def test_contains_passes_and_fails_listing_the_statements(book: Any) -> None:
    with db_session, assert_sql_contains("order by", count=1):
        list(book.select().order_by(book.title))
    with db_session, assert_sql_contains(re.compile(r"WHERE .*title")):
        list(select(b for b in book if b.title == "a"))
    with pytest.raises(StatementMismatch, match=r"(?s)containing 'GROUP BY', 0 did.*1\. SELECT"):  # noqa: SIM117
        with db_session, assert_sql_contains("GROUP BY"):
            list(book.select())
    with pytest.raises(StatementMismatch, match="exactly 2 statement"):  # noqa: SIM117
        with db_session, assert_sql_contains("SELECT", count=2):
            list(book.select())


def test_contains_sees_other_threads(book: Any) -> None:
    def work() -> None:
        with db_session:
            list(book.select().order_by(book.title))

    with assert_sql_contains("ORDER BY") as log:
        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
    assert any(s.thread != threading.current_thread().name for s in log.statements)


def test_contains_refuses_bad_arguments() -> None:
    with pytest.raises(OptionError, match="non-empty SQL fragment"), assert_sql_contains(" "):
        pass
    with pytest.raises(OptionError, match="count"), assert_sql_contains("x", count=-1):
        pass


def test_snapshot_writes_matches_and_diffs(
    book: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "snaps" / "listing.sql"

    def run(title: str) -> Any:
        with db_session, capture_statements() as log:
            list(select(b for b in book if b.title == title))
        return log

    run("a").assert_match(target)  # missing: written
    first = target.read_text()
    assert first.count("\n") == 1 and "?" in first
    run("other value").assert_match(target)  # same statement, another parameter: matches
    with db_session, capture_statements() as log:
        list(book.select().order_by(book.title))
    with pytest.raises(StatementMismatch, match=r"(?sm)differ from the snapshot.*^\+.*ORDER BY"):
        log.assert_match(target)
    assert target.read_text() == first  # a mismatch does not rewrite
    monkeypatch.setenv("PONYKIT_UPDATE_SNAPSHOTS", "1")
    log.assert_match(target)
    assert "ORDER BY" in target.read_text()


def test_normalize_sql() -> None:
    sql = (
        'SELECT "b"."id", "b"."b"\nFROM "book" "b", "author" "a2"\n'
        ' WHERE "b"."x" = %(p1)s AND "a2".y = $2 LIMIT 10'
    )
    assert normalize_sql(sql) == (
        'SELECT "t1"."id", "t1"."b" FROM "book" "t1", "author" "t2" WHERE "t1"."x" = ? AND "t2".y = ? LIMIT ?'
    )
    assert normalize_sql("SELECT `b`.`id` FROM `book` `b` WHERE `b`.`t` = 'it''s' AND x = ?") == (
        "SELECT `t1`.`id` FROM `book` `t1` WHERE `t1`.`t` = ? AND x = ?"
    )
    joined = 'SELECT "b"."id" FROM "book" "b" LEFT JOIN "author" "author" ON "b"."author" = "author"."id"'
    assert normalize_sql(joined) == (
        'SELECT "t1"."id" FROM "book" "t1" LEFT JOIN "author" "t2" ON "t1"."author" = "t2"."id"'
    )


def test_fixtures_and_update_option(pytester: pytest.Pytester) -> None:
    """In a user's suite: the fixtures, the snapshots directory next to the test, the update option."""
    pytester.makepyfile(
        test_user="""
        import pytest
        from pony.orm import Required, db_session

        @pytest.fixture
        def book(ponykit_db):
            class Book(ponykit_db.Entity):
                title = Required(str)
            ponykit_db.generate_mapping(create_tables=True)
            return Book

        def test_snapshot(book, sql_snapshot, request):
            with sql_snapshot, db_session:
                list(book.select())
            sql_snapshot.assert_match("listing.{dialect}.sql")

        def test_contains(book, assert_sql_contains):
            with pytest.raises(AssertionError), assert_sql_contains("DELETE"), db_session:
                list(book.select())
        """
    )
    installed = any(ep.name == "ponykit" for ep in entry_points(group="pytest11"))
    args = [] if installed else ["-p", "ponykit.testing"]
    pytester.runpytest(*args).assert_outcomes(passed=2)
    snapshot = pytester.path / "snapshots" / "listing.sqlite.sql"
    assert "SELECT" in snapshot.read_text()
    snapshot.write_text("SELECT 1\n")
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*--ponykit-update-snapshots*"])
    pytester.runpytest(*args, "--ponykit-update-snapshots").assert_outcomes(passed=2)
    assert "SELECT 1" not in snapshot.read_text()
