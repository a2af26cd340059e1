"""Assertions on the SQL a block runs: a fragment it must contain, and golden-file snapshots.

Both are built on :mod:`ponykit.diagnostics`' statement capture, so they see the statements of every
thread (a request served by a test client's worker thread included) on every attached Database::

    with assert_sql_contains("ORDER BY", count=1):
        list(Book.select().order_by(Book.title))

    with capture_statements() as log:
        list(Book.select().order_by(Book.title))
    log.assert_match("tests/snapshots/books.sql")   # written when missing, compared otherwise

``assert_sql_contains`` and ``sql_snapshot`` are pytest fixtures too (the ponykit plugin). A snapshot file
is rewritten instead of compared when pytest runs with ``--ponykit-update-snapshots`` or the environment
has ``PONYKIT_UPDATE_SNAPSHOTS=1``.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pony.orm import Database

from .. import _pony
from ..diagnostics import QueryCounter, Statement, count_queries
from ..errors import OptionError, StatementMismatch

__all__ = [
    "StatementLog",
    "add_options",
    "assert_sql_contains",
    "assert_sql_contains_fixture",
    "capture_statements",
    "normalize_sql",
    "sql_snapshot_fixture",
]

UPDATE_OPTION = "--ponykit-update-snapshots"
UPDATE_ENV = "PONYKIT_UPDATE_SNAPSHOTS"

_QUOTED = r'(?:"[^"]+"|`[^`]+`)'
# "table" "alias" after FROM, JOIN or a comma: how Pony declares every alias it uses.
_ALIAS_DECLARATION = re.compile(rf"(?:\bFROM|\bJOIN|,)\s+{_QUOTED}\s+({_QUOTED})", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"%\([^)]*\)s|%s|\$\d+|\?|(?<![:\w]):\w+")
_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w\"`.])-?\d+(?:\.\d+)?(?![\w\"`])")
_WHITESPACE = re.compile(r"\s+")


def normalize_sql(sql: str) -> str:
    """``sql`` on one line, stable across runs: whitespace collapsed, every parameter and literal value
    written ``?``, and table aliases renamed ``t1``, ``t2`` ... in order of appearance."""
    text = _WHITESPACE.sub(" ", sql).strip()
    text = _STRING_LITERAL.sub("?", text)
    text = _PLACEHOLDER.sub("?", text)
    text = _NUMBER.sub("?", text)
    aliases: dict[str, str] = {}

    def declare(match: re.Match[str]) -> str:
        alias = match.group(1)
        stable = aliases.setdefault(alias, f"{alias[0]}t{len(aliases) + 1}{alias[0]}")
        return match.group(0)[: match.start(1) - match.start(0)] + stable

    # The declarations ("book" "b") first, then every qualified use ("b"."title"): never the table
    # ("author" "author") nor a column that has the alias's name.
    text = _ALIAS_DECLARATION.sub(declare, text)
    for alias, stable in aliases.items():
        text = re.sub(rf"{re.escape(alias)}(?=\.)", stable, text)
    return text


class StatementLog:
    """The statements a :func:`capture_statements` block ran (live while it runs)."""

    def __init__(self, counter: QueryCounter) -> None:
        self.counter = counter

    @property
    def statements(self) -> list[Statement]:
        """The statements, as :class:`ponykit.diagnostics.Statement` (``sql``, ``params``, ``thread``)."""
        return list(self.counter.statements)

    def normalized(self) -> list[str]:
        """Each statement through :func:`normalize_sql`, in the order they finished."""
        return [normalize_sql(statement.sql) for statement in self.counter.statements]

    def text(self) -> str:
        """The normalized statements, one per line: the content of a snapshot file."""
        return "".join(line + "\n" for line in self.normalized())

    def report(self) -> str:
        """The statements, numbered (parameter counts, never their values): for failure messages."""
        return self.counter.report() or "  (none)"

    def assert_match(self, path: str | os.PathLike[str], *, update: bool | None = None) -> None:
        """Compare :meth:`text` with the file at ``path``; write the file when it is missing or ``update``
        (default: ``PONYKIT_UPDATE_SNAPSHOTS=1`` in the environment) and raise
        :class:`~ponykit.errors.StatementMismatch` with a diff when they differ."""
        target = Path(path)
        if update is None:
            update = os.environ.get(UPDATE_ENV, "") not in ("", "0")
        actual = self.text()
        if update or not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(actual, encoding="utf-8")
            return
        expected = target.read_text(encoding="utf-8")
        if expected == actual:
            return
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"{target} (snapshot)",
                tofile="statements run",
            )
        )
        raise StatementMismatch(
            f"the statements run differ from the snapshot {target}:\n{diff}\nIf the change is intended, "
            f"rerun with {UPDATE_OPTION} (or {UPDATE_ENV}=1) to rewrite the file."
        )


@contextmanager
def capture_statements(db: Database | None = None) -> Iterator[StatementLog]:
    """Record the statements the block runs, on ``db`` or on every attached Database, in every thread."""
    with count_queries(db) as counter:
        yield StatementLog(counter)


def _matcher(fragment: str | re.Pattern[str]) -> tuple[Callable[[str], bool], str]:
    if isinstance(fragment, re.Pattern):
        return (lambda sql: fragment.search(sql) is not None), f"a match of /{fragment.pattern}/"
    if not isinstance(fragment, str) or not fragment.strip():
        raise OptionError(
            f"assert_sql_contains() expects a non-empty SQL fragment or a compiled regex, got {fragment!r}"
        )
    wanted = _WHITESPACE.sub(" ", fragment).strip().lower()
    return (lambda sql: wanted in sql.lower()), repr(fragment)


@contextmanager
def assert_sql_contains(
    fragment: str | re.Pattern[str], *, count: int | None = None, db: Database | None = None
) -> Iterator[StatementLog]:
    """Fail unless a statement run in the block contains ``fragment`` (``count``: exactly that many do).

    A string matches case-insensitively, whitespace collapsed; a compiled regex is searched in each
    statement (whitespace collapsed too). Statements of every thread count, on ``db`` or on every
    attached Database. The failure (:class:`~ponykit.errors.StatementMismatch`) lists the statements run.
    """
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise OptionError(f"assert_sql_contains(count=...) needs a whole number >= 0 or None, got {count!r}")
    matches, described = _matcher(fragment)
    with capture_statements(db) as log:
        yield log
    found = sum(1 for s in log.statements if matches(_WHITESPACE.sub(" ", s.sql).strip()))
    if (found >= 1) if count is None else (found == count):
        return
    wanted = "at least one statement" if count is None else f"exactly {count} statement(s)"
    hint = ""
    if not log.statements:
        hint = "\nNo statement was observed: is the Database attached (ponykit.attach(db))?"
    raise StatementMismatch(
        f"expected {wanted} containing {described}, {found} did; the block ran {len(log.statements)} "
        f"statement(s):\n{log.report()}{hint}"
    )


# ---------------------------------------------------------------------------------------------------------
# pytest: the option and the fixtures (the plugin module, ponykit.testing, exports them)


def add_options(parser: pytest.Parser) -> None:
    """Add ``--ponykit-update-snapshots`` to pytest's command line."""
    parser.getgroup("ponykit").addoption(
        UPDATE_OPTION,
        action="store_true",
        default=False,
        help=f"rewrite the SQL snapshot files instead of comparing them (also {UPDATE_ENV}=1)",
    )


class SqlSnapshot:
    """The ``sql_snapshot`` fixture: ``with sql_snapshot: ...`` then ``sql_snapshot.assert_match(name)``.

    A relative name is a file of the ``snapshots`` directory next to the test module. ``{dialect}`` in
    the name becomes the dialect of the first statement's Database (``books.{dialect}.sql``), for suites
    that run on several backends.
    """

    def __init__(self, directory: Path, update: bool) -> None:
        self.directory = directory
        self.update = update
        self.db: Database | None = None
        self._log: StatementLog | None = None
        self._manager: Any = None

    def __call__(self, db: Database | None = None) -> SqlSnapshot:
        """Watch only ``db`` (``with sql_snapshot(db): ...``)."""
        self.db = db
        return self

    def __enter__(self) -> StatementLog:
        self._manager = capture_statements(self.db)
        self._log = self._manager.__enter__()
        return self._log

    def __exit__(self, *exc_info: Any) -> None:
        self._manager.__exit__(*exc_info)

    @property
    def log(self) -> StatementLog:
        """The statements of the last ``with`` block."""
        if self._log is None:
            raise OptionError("sql_snapshot: run the code inside `with sql_snapshot: ...` first")
        return self._log

    def assert_match(self, name: str | os.PathLike[str]) -> None:
        """Compare the last block's statements with the snapshot file ``name`` (see the class docs)."""
        text = os.fspath(name)
        if "{dialect}" in text:
            statements = self.log.statements
            dialect = _pony.dialect(statements[0].db) if statements else "none"
            text = text.replace("{dialect}", dialect.lower())
        path = Path(text)
        if not path.is_absolute():
            path = self.directory / path
        self.log.assert_match(path, update=True if self.update else None)


@pytest.fixture(name="assert_sql_contains")
def assert_sql_contains_fixture() -> Callable[..., Any]:
    """:func:`assert_sql_contains`: ``with assert_sql_contains("JOIN", count=1): ...``."""
    return assert_sql_contains


@pytest.fixture(name="sql_snapshot")
def sql_snapshot_fixture(request: pytest.FixtureRequest) -> SqlSnapshot:
    """A :class:`SqlSnapshot` whose files live in ``snapshots/`` next to the test module."""
    update = bool(request.config.getoption(UPDATE_OPTION.lstrip("-").replace("-", "_"), default=False))
    return SqlSnapshot(Path(request.path).parent / "snapshots", update)
