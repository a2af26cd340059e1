"""The SQL log on ``ponykit.sql``: one DEBUG record per statement with semconv fields, on every backend."""

from __future__ import annotations

import inspect
import io
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from pony.orm import Database, DatabaseError, Optional, Required, Set, commit, db_session, select

import ponykit as pk
from ponykit.diagnostics import _sqllog

FIELDS = (
    "db.system.name",
    "db.namespace",
    "db.operation.name",
    "db.collection.name",
    "db.query.text",
    "db.query.parameters",
    "duration_ms",
    "rowcount",
    "db.transaction.id",
    "code.caller",
)
SYSTEMS = {"sqlite": "sqlite", "postgres": "postgresql", "mysql": "mariadb"}  # the test server is MariaDB


class ListHandler(logging.Handler):
    """Keeps every record it is given."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def sql_log() -> Iterator[ListHandler]:
    """``ponykit.sql`` at DEBUG into a list for the duration of the test."""
    logger = logging.getLogger("ponykit.sql")
    handler = ListHandler()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def m(db: Database) -> Any:
    class Author(db.Entity):
        name = Required(str)
        books = Set("Book")

    class Book(db.Entity):
        title = Required(str)
        pages = Optional(int)
        author = Required(Author)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        author = Author(name="a")
        for i in range(3):
            Book(title=f"t{i}", pages=100 + i, author=author)
    return Author, Book


def here() -> int:
    """The line number of the caller's next line."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno + 1


def test_select_and_insert_records_have_every_field(m: Any, db: Database, backend: Any, sql_log: Any) -> None:
    """A query and a flush each give one record with the semconv fields, the caller and the transaction."""
    _author, book = m
    sql_log.records.clear()
    with db_session:
        wanted = 101
        line = here()
        found = list(select(b for b in book if b.pages >= wanted))
        assert len(found) == 2
        book(title="new", pages=7, author=found[0].author)
        commit()
        list(select(b for b in book if b.pages == wanted))
    selects = [r for r in sql_log.records if r.__dict__["db.operation.name"] == "SELECT"]
    inserts = [r for r in sql_log.records if r.__dict__["db.operation.name"] == "INSERT"]
    assert len(inserts) == 1
    first, insert, last = selects[0], inserts[0], selects[-1]
    for record in (first, insert, last):
        fields = record.__dict__
        for name in FIELDS:
            assert name in fields, name
        assert record.name == "ponykit.sql"
        assert record.levelno == logging.DEBUG
        assert fields["db.system.name"] == SYSTEMS[backend.name]
        assert fields["db.collection.name"].lower() == "book"
        assert isinstance(fields["duration_ms"], float) and fields["duration_ms"] > 0
        assert record.getMessage() == f"{fields['db.query.text']} ({fields['duration_ms']:.2f} ms)"
        assert "error.type" not in fields
    if backend.name == "sqlite":
        assert first.__dict__["db.namespace"].endswith("test.db")
    else:
        assert first.__dict__["db.namespace"] == urlsplit(backend.url).path.lstrip("/")
    assert first.__dict__["code.caller"] == f"test_sqllog.py:{line}"
    assert first.pathname == __file__ and first.lineno == line
    assert wanted in tuple(_values(first.__dict__["db.query.parameters"]))
    assert "new" in tuple(_values(insert.__dict__["db.query.parameters"]))
    assert insert.__dict__["rowcount"] == 1
    # The flush before commit() and the first query share a transaction; the query after it does not.
    assert first.__dict__["db.transaction.id"] == insert.__dict__["db.transaction.id"] is not None
    assert last.__dict__["db.transaction.id"] not in (None, first.__dict__["db.transaction.id"])


def _values(parameters: Any) -> Any:
    return parameters.values() if isinstance(parameters, dict) else parameters


def test_raw_sql_is_logged(m: Any, db: Database, sql_log: Any) -> None:
    """db.select and db.execute are statements like any other: logged with their text and values."""
    sql_log.records.clear()
    with db_session:
        given = {"low": 101}
        rows = db.select("SELECT title FROM book WHERE pages >= $low ORDER BY title", {}, given)
        db.execute("UPDATE book SET pages = pages + 1 WHERE pages < $low", {}, given)
    assert sorted(rows) == ["t1", "t2"]
    texts = [r.__dict__["db.query.text"] for r in sql_log.records]
    assert any(t.startswith("SELECT title FROM book") for t in texts)
    update = next(r for r in sql_log.records if r.__dict__["db.query.text"].startswith("UPDATE book"))
    assert update.__dict__["db.operation.name"] == "UPDATE"
    assert update.__dict__["db.collection.name"] == "book"
    assert tuple(_values(update.__dict__["db.query.parameters"])) == (101,)
    assert update.__dict__["rowcount"] == 1
    assert update.__dict__["code.caller"].startswith("test_sqllog.py:")


def test_failing_statement_is_logged_with_its_error_type(m: Any, db: Database, sql_log: Any) -> None:
    """A statement the server refuses is logged once, with error.type and no rowcount."""
    sql_log.records.clear()
    with pytest.raises(DatabaseError) as info, db_session:
        db.select("SELECT nothing FROM no_such_table")
    failed = [r for r in sql_log.records if "error.type" in r.__dict__]
    assert len(failed) == 1
    record = failed[0]
    error = info.value
    # Pony wraps the driver's error; the record names the driver's class the hook saw.
    assert record.__dict__["error.type"].rsplit(".", 1)[-1] in {
        type(error).__name__,
        type(getattr(error, "original_exc", error)).__name__,
    }
    assert record.__dict__["rowcount"] is None
    assert record.getMessage().endswith(f"failed: {record.__dict__['error.type']}")
    assert record.__dict__["db.collection.name"] == "no_such_table"


def test_disabled_logger_emits_nothing(m: Any, db: Database, sql_log: Any) -> None:
    """Above DEBUG (the default), no record is made at all, not even for handlers that would take it."""
    _author, book = m
    logging.getLogger("ponykit.sql").setLevel(logging.INFO)
    sql_log.records.clear()
    with db_session:
        list(select(b for b in book))
        db.select("SELECT title FROM book")
    assert sql_log.records == []
    logging.getLogger("ponykit.sql").setLevel(logging.DEBUG)
    with db_session:
        list(select(b for b in book))
    assert len(sql_log.records) == 1


class JsonFormatter(logging.Formatter):
    """A plain JSON formatter: the message and every field a record got through ``extra``."""

    STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in record.__dict__.items() if k not in self.STANDARD}
        return json.dumps({"message": record.getMessage(), **fields}, default=str)


@pytest.mark.backends("sqlite")
def test_json_formatter_prints_the_dotted_fields_unchanged(m: Any, db: Database) -> None:
    """The ``extra`` keys reach a JSON formatter under their semconv names."""
    _author, book = m
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ponykit.sql")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with db_session:
            title = "t1"
            list(select(b for b in book if b.title == title))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    printed = json.loads(stream.getvalue().splitlines()[-1])
    for name in FIELDS:
        assert name in printed
    assert printed["db.operation.name"] == "SELECT"
    assert printed["db.query.parameters"] == ["t1"]
    assert printed["code.caller"].startswith("test_sqllog.py:")


@pytest.mark.backends("sqlite")
def test_structlog_processor_formatter_prints_the_dotted_fields_unchanged(m: Any, db: Database) -> None:
    """structlog's ProcessorFormatter (stdlib records through structlog's JSON renderer) keeps the fields."""
    import structlog  # the dev extra installs it

    _author, book = m
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ExtraAdder(),
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(default=str),
            ],
        )
    )
    logger = logging.getLogger("ponykit.sql")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with db_session:
            title = "t2"
            list(select(b for b in book if b.title == title))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    printed = json.loads(stream.getvalue().splitlines()[-1])
    for name in FIELDS:
        assert name in printed, name
    assert printed["db.collection.name"].lower() == "book"
    assert printed["db.query.parameters"] == ["t2"]
    assert printed["event"].startswith("SELECT")


@pytest.mark.parametrize(
    ("sql", "operation", "collection", "summary"),
    [
        ('SELECT "b"."id" FROM "book" "b" WHERE "b"."id" = ?', "SELECT", "book", "SELECT book"),
        ("  select * from `shop`.`order` o", "SELECT", "shop.order", "SELECT shop.order"),
        ('INSERT INTO "book" ("title") VALUES (%(p1)s) RETURNING "id"', "INSERT", "book", "INSERT book"),
        ('UPDATE "book"\nSET "title" = ?\nWHERE "id" = ?', "UPDATE", "book", "UPDATE book"),
        ('DELETE FROM "book"\nWHERE "id" = ?', "DELETE", "book", "DELETE book"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "SELECT", "x", "SELECT x"),
        ('CREATE TABLE IF NOT EXISTS "book" (id int)', "CREATE", "book", "CREATE book"),
        ("SELECT 1", "SELECT", None, "SELECT"),
        ("BEGIN IMMEDIATE", "BEGIN", None, "BEGIN"),
        ("", None, None, "SQL"),
    ],
)
def test_statement_facts(sql: str, operation: str | None, collection: str | None, summary: str) -> None:
    """Operation, main table and summary come from the text (no server needed)."""
    facts = _sqllog.statement_facts(sql)
    assert (facts.operation, facts.collection, facts.summary) == (operation, collection, summary)
    assert _sqllog.statement_facts(sql) is facts  # remembered
