"""The SQL log: one record per statement on the stdlib logger ``ponykit.sql`` at DEBUG.

:func:`install` (run by ``attach()``) adds one statement listener per attached Database. When
``ponykit.sql`` is not enabled for DEBUG the listener's whole cost is that one level check; otherwise it
builds a record whose message is ``"<sql> (<ms> ms)"`` and whose ``extra`` fields carry the
OpenTelemetry database names, so a JSON formatter or structlog prints them as they are::

    db.system.name        postgresql / mysql / mariadb / sqlite
    db.namespace          the database name (SQLite: the file)
    db.operation.name     SELECT, INSERT, UPDATE, DELETE ...
    db.collection.name    the statement's main table
    db.query.text         the SQL text, as the driver received it
    db.query.parameters   the bound values, those of sensitive()/encrypted columns replaced by "***"
    duration_ms           the driver's execution time
    rowcount              the cursor's rowcount (None when the driver does not know it)
    db.transaction.id     ponykit's number for the transaction (None outside a db_session)
    code.caller           "file.py:123", the first frame outside ponykit and Pony
    error.type            the exception's class when the statement failed (never its message)

The facts shared with the OpenTelemetry spans (:func:`database_facts`, :func:`statement_facts`) live here.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import weakref
from dataclasses import dataclass
from types import FrameType
from typing import Any

import pony
from pony.orm import Database

from .. import _pony
from .._kit import Kit
from ..transactions import transaction_id
from ._masking import mask_parameters

__all__ = [
    "DatabaseFacts",
    "StatementFacts",
    "caller",
    "database_facts",
    "error_type",
    "install",
    "logger",
    "statement_facts",
]

logger = logging.getLogger("ponykit.sql")
"""The SQL log's logger: one DEBUG record per statement."""

_DEBUG = logging.DEBUG
_SYSTEMS = {"postgres": "postgresql", "sqlite": "sqlite", "mysql": "mysql", "cockroach": "cockroachdb"}


@dataclass(frozen=True)
class DatabaseFacts:
    """What the log and the spans say about a Database: semconv system name, namespace, server."""

    system: str
    namespace: str | None
    address: str | None
    port: int | None


_facts: weakref.WeakKeyDictionary[Database, DatabaseFacts] = weakref.WeakKeyDictionary()


def database_facts(db: Database) -> DatabaseFacts:
    """The :class:`DatabaseFacts` of ``db`` (computed once the server version is known, then kept)."""
    found = _facts.get(db)
    if found is not None:
        return found
    family = _pony.dialect(db)
    system = _SYSTEMS.get(family, family)
    version = _pony.server_version(db)
    if family == "mysql" and version and version[0] >= 10:
        system = "mariadb"  # MySQL went from 5.7 to 8 and 9; MariaDB's versions start at 10
    namespace, host, port = _pony.connection_target(db)
    found = DatabaseFacts(system, namespace, host, port)
    if version or family != "mysql":  # before the first connection MariaDB cannot be told from MySQL
        _facts[db] = found
    return found


@dataclass(frozen=True)
class StatementFacts:
    """The operation (``SELECT``), main table and summary (``SELECT book``) of one SQL text."""

    operation: str | None
    collection: str | None
    summary: str


_HEAD = re.compile(r"[\s(]*([A-Za-z]+)")
_NAME = r"""(?:"[^"]+"|`[^`]+`|[\w$]+)"""
_TABLE_AFTER = {
    "SELECT": re.compile(rf"\bFROM\s+({_NAME}(?:\s*\.\s*{_NAME})?)", re.IGNORECASE),
    "DELETE": re.compile(rf"\bFROM\s+({_NAME}(?:\s*\.\s*{_NAME})?)", re.IGNORECASE),
    "INSERT": re.compile(rf"\bINTO\s+({_NAME}(?:\s*\.\s*{_NAME})?)", re.IGNORECASE),
    "REPLACE": re.compile(rf"\bINTO\s+({_NAME}(?:\s*\.\s*{_NAME})?)", re.IGNORECASE),
    "UPDATE": re.compile(rf"^[\s(]*UPDATE\s+({_NAME}(?:\s*\.\s*{_NAME})?)", re.IGNORECASE),
    "COPY": re.compile(rf"^[\s(]*COPY\s+({_NAME}(?:\s*\.\s*{_NAME})?)", re.IGNORECASE),
}
_MAIN_OF_WITH = re.compile(r"\)\s*(SELECT|INSERT|UPDATE|DELETE)\b", re.IGNORECASE)
_DDL_TABLE = re.compile(
    rf"\bTABLE\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?({_NAME}(?:\s*\.\s*{_NAME})?)", re.IGNORECASE
)

# Pony runs the same few texts over and over: parse each once (bounded, like transactions' write memo).
_MEMO: dict[str, StatementFacts] = {}
_MEMO_MAX_CHARS = 2000
_MEMO_MAX_ENTRIES = 4096


def _unquote(name: str) -> str:
    return ".".join(part.strip().strip('"`') for part in name.split("."))


def _parse(sql: str) -> StatementFacts:
    head = _HEAD.match(sql)
    operation = head.group(1).upper() if head else None
    if operation == "WITH":
        main = _MAIN_OF_WITH.search(sql)
        operation = main.group(1).upper() if main else "WITH"
    table_re = _TABLE_AFTER.get(operation or "")
    if table_re is None and operation in ("CREATE", "DROP", "ALTER", "TRUNCATE"):
        table_re = _DDL_TABLE
    found = table_re.search(sql) if table_re is not None else None
    collection = _unquote(found.group(1)) if found else None
    summary = " ".join(x for x in (operation, collection) if x) or "SQL"
    return StatementFacts(operation, collection, summary)


def statement_facts(sql: str) -> StatementFacts:
    """The :class:`StatementFacts` of ``sql``, remembered per text for texts up to 2,000 characters."""
    if len(sql) > _MEMO_MAX_CHARS:
        return _parse(sql)
    found = _MEMO.get(sql)
    if found is None:
        found = _parse(sql)
        if len(_MEMO) >= _MEMO_MAX_ENTRIES:
            _MEMO.clear()
        _MEMO[sql] = found
    return found


def error_type(error: BaseException) -> str:
    """The exception's fully qualified class name (``psycopg2.errors.UniqueViolation``), never its text:
    a driver's message may quote the values of the row (``Key (ssn)=(...) already exists``)."""
    cls = type(error)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


# Frames of these files are ponykit's or Pony's own (or code they generate): the caller is further out.
_INTERNAL_DIRS = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
    os.path.dirname(os.path.abspath(pony.__file__)) + os.sep,
)
_internal_files: dict[str, bool] = {}


def _is_internal(filename: str) -> bool:
    known = _internal_files.get(filename)
    if known is None:
        path = filename if filename.startswith("<") else os.path.abspath(filename)
        # "<string>": the wrappers Pony's decorators compile; "<ponykit:...>": ponykit's generated code.
        known = path.startswith(_INTERNAL_DIRS) or path.startswith(("<ponykit:", "<decorator", "<string>"))
        if len(_internal_files) < 4096:
            _internal_files[filename] = known
    return known


_short_names: dict[str, str] = {}


def _short_name(filename: str) -> str:
    short = _short_names.get(filename)
    if short is None:
        short = os.path.basename(filename)
        if len(_short_names) < 4096:
            _short_names[filename] = short
    return short


def _caller_frame() -> FrameType | None:
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and _is_internal(frame.f_code.co_filename):
        frame = frame.f_back
    return frame


def caller(*, full_path: bool = False) -> str | None:
    """``"file.py:123"``: where the first frame outside ponykit and Pony is now (None if there is none).

    With ``full_path``, the file's whole path. Walks the stack: call it only once a record is known to
    be wanted. The SQL log, the slow-query log and ``profile()`` all name the caller this way.
    """
    frame = _caller_frame()
    if frame is None:
        return None
    filename = frame.f_code.co_filename
    return f"{filename if full_path else _short_name(filename)}:{frame.f_lineno}"


def _rowcount(cursor: Any) -> int | None:
    count = getattr(cursor, "rowcount", None)
    return count if isinstance(count, int) and count >= 0 else None


def _emit(
    db: Database, cursor: Any, sql: str, arguments: Any, seconds: float, error: BaseException | None
) -> None:
    facts = database_facts(db)
    statement = statement_facts(sql)
    frame = _caller_frame()
    duration_ms = seconds * 1000.0
    extra: dict[str, Any] = {
        "db.system.name": facts.system,
        "db.namespace": facts.namespace,
        "db.operation.name": statement.operation,
        "db.collection.name": statement.collection,
        "db.query.text": sql,
        "db.query.parameters": mask_parameters(db, sql, arguments),
        "duration_ms": duration_ms,
        "rowcount": None if error is not None else _rowcount(cursor),
        "db.transaction.id": transaction_id(db),
        "code.caller": None,
    }
    pathname, lineno, function = "(unknown file)", 0, None
    if frame is not None:
        code = frame.f_code
        pathname, lineno, function = code.co_filename, frame.f_lineno, code.co_name
        extra["code.caller"] = f"{_short_name(pathname)}:{lineno}"
    args: tuple[Any, ...]
    if error is None:
        msg, args = "%s (%.2f ms)", (sql, duration_ms)
    else:
        extra["error.type"] = error_type(error)
        msg, args = "%s (%.2f ms) failed: %s", (sql, duration_ms, extra["error.type"])
    # makeRecord with the caller found above: logger.debug() would walk the stack a second time.
    record = logger.makeRecord(logger.name, _DEBUG, pathname, lineno, msg, args, None, function, extra)
    logger.handle(record)


def _listener(
    db: Database, cursor: Any, sql: str, arguments: Any, seconds: float, error: BaseException | None
) -> None:
    # The whole cost when the SQL log is off: one (cached) level check.
    if logger.isEnabledFor(_DEBUG):
        _emit(db, cursor, sql, arguments, seconds, error)


_installed: weakref.WeakSet[Kit] = weakref.WeakSet()
_install_lock = threading.Lock()


def install(kit: Kit) -> None:
    """Log the statements of ``kit``'s Database on ``ponykit.sql`` (idempotent; attach() runs it)."""
    with _install_lock:
        if kit in _installed:
            return
        kit.add_statement_listener(_listener)
        _installed.add(kit)
