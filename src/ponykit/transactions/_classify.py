"""Which database errors a transaction may run again after: transient, ambiguous or fatal.

* **transient**: the database rolled the transaction back (or never applied any of it) because of other
  transactions or a lost connection, and running it again may succeed: PostgreSQL serialization failure
  (40001) and deadlock (40P01), MySQL/MariaDB deadlock (1213) and lock wait timeout (1205: InnoDB rolls
  back only the statement, so the retry starts with an explicit rollback, which ``transaction()``
  always does), SQLite BUSY/LOCKED, Pony's ``OptimisticCheckError``/``UnrepeatableReadError``, and a
  connection lost before COMMIT was sent (ponykit's ``ConnectionLostError`` included).
* **ambiguous**: COMMIT was sent and no answer came back (the connection broke while it was in flight).
  The transaction may be applied or not; running it again could apply it twice.
* **fatal**: everything else: integrity errors, a COMMIT the server refused with an error it reported
  (the transaction is known not to be applied, and the error says why), Pony's
  ``PartialCommitException`` (one database committed, another did not), errors of the application.

The drivers' own codes are read: ``pgcode`` (psycopg2) or ``sqlstate`` (psycopg 3), ``args[0]``
(PyMySQL/mysqlclient) and ``sqlite_errorcode`` (sqlite3), also through Pony's wrappers
(``original_exc``) and its ``CommitException``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

from pony.orm import CommitException, OptimisticCheckError, UnrepeatableReadError

from .. import _pony
from ..errors import AmbiguousCommitError, ConnectionLostError, RetriesExhausted

__all__ = [
    "ErrorClass",
    "classify_error",
    "error_code",
    "mark_unanswered_commit",
    "server_answered",
    "unanswered_commit_error",
]

ErrorClass = Literal["transient", "ambiguous", "fatal"]

_PG_TRANSIENT = frozenset({"40001", "40P01"})
# The server is going away or has dropped the session: the work of the transaction is gone with it.
_PG_CONNECTION = frozenset({"57P01", "57P02", "57P03"})
_MYSQL_TRANSIENT = frozenset({1213, 1205})
# Client-side "lost the server" errors (CR_SERVER_GONE_ERROR, CR_SERVER_LOST, CR_SERVER_LOST_EXTENDED),
# ER_CONNECTION_KILLED (MariaDB 1927), ER_SERVER_SHUTDOWN (1053).
_MYSQL_CONNECTION = frozenset({2006, 2013, 2055, 1927, 1053})
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6

_UNANSWERED = "_ponykit_commit_unanswered_"


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's exception behind one of Pony's wrappers, or ``exc`` itself."""
    return _pony.driver_error(exc)


def error_code(exc: BaseException) -> str | int | None:
    """The database's code for ``exc``: a SQLSTATE (PostgreSQL), an error number (MySQL, SQLite), or None."""
    err = _driver_error(exc)
    module = type(err).__module__ or ""
    if module.startswith(("pymysql", "MySQLdb")):
        # The error number, not a SQLSTATE: MySQL gives many errors (1205 among them) the generic HY000.
        args = getattr(err, "args", ())
        return args[0] if args and isinstance(args[0], int) else None
    code = getattr(err, "pgcode", None) or getattr(err, "sqlstate", None)
    if isinstance(code, str) and code:
        return code
    sqlite_code = getattr(err, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        return sqlite_code
    return None


def server_answered(exc: BaseException) -> bool:
    """True when the database itself reported ``exc`` (so it knows what became of the transaction).

    SQLite runs in the process: it always knows. A PostgreSQL error with a SQLSTATE came from the server;
    one without (a broken socket) did not. MySQL client errors are numbered from 2000.
    """
    err = _driver_error(exc)
    module = type(err).__module__ or ""
    if module.startswith("sqlite3"):
        return True
    code = error_code(err)
    if isinstance(code, str):
        return code not in _PG_CONNECTION and not code.startswith("08")
    if isinstance(code, int):
        return code < 2000 and code not in _MYSQL_CONNECTION
    return False


def mark_unanswered_commit(exc: BaseException) -> None:
    """Record on ``exc`` that it broke a COMMIT the server did not answer (the commit wrapper calls it)."""
    # An exception type with __slots__ cannot carry the mark; it is then classified by its code.
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, _UNANSWERED, True)


def _is_unanswered_commit(exc: BaseException) -> bool:
    return unanswered_commit_error(exc) is not None


def unanswered_commit_error(exc: BaseException) -> BaseException | None:
    """The COMMIT error marked by the commit wrapper behind ``exc``, if there is one.

    Pony rolls back after a failed COMMIT; on a dead connection that rollback fails too (PyMySQL:
    ``InterfaceError(0, '')``), and the rollback's error is what reaches the caller, with the COMMIT's
    error as its ``__context__``. So the chain of contexts is searched, not only ``exc``.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for candidate in (current, _driver_error(current)):
            if getattr(candidate, _UNANSWERED, False):
                return candidate
        current = current.__context__
    return None


def classify_error(exc: BaseException) -> ErrorClass:
    """Say whether the transaction that raised ``exc`` may be run again.

    ``"transient"``: yes, it was rolled back for reasons that may pass (deadlock, serialization failure,
    lock timeout, busy database, optimistic check, a connection lost before COMMIT). ``"ambiguous"``:
    never blindly, COMMIT may or may not have been applied. ``"fatal"``: no, running it again would fail
    the same way (or it must not run again). Works on the drivers' exceptions, on Pony's wrappers of them
    and on Pony's own transaction errors.
    """
    if isinstance(exc, AmbiguousCommitError):
        return "ambiguous"
    if _pony.is_partial_commit(exc) or isinstance(exc, RetriesExhausted):
        return "fatal"
    if isinstance(exc, CommitException):
        inner = _first_inner(exc)
        if inner is None or _is_unanswered_commit(inner):
            return "ambiguous"
        if isinstance(inner, ConnectionLostError):
            return "transient"  # refused before COMMIT was sent: the server rolled it back
        if not server_answered(inner):
            return "ambiguous"
        return _classify_answered(inner)
    if _is_unanswered_commit(exc):
        return "ambiguous"
    if isinstance(exc, (OptimisticCheckError, UnrepeatableReadError, ConnectionLostError)):
        return "transient"
    return _classify_answered(exc)


def _first_inner(exc: Any) -> BaseException | None:
    exceptions = getattr(exc, "exceptions", None) or ()
    for info in exceptions:
        candidate = info[1] if isinstance(info, tuple) and len(info) > 1 else info
        if isinstance(candidate, BaseException):
            return candidate
    return None


def _classify_answered(exc: BaseException) -> ErrorClass:
    code = error_code(exc)
    if isinstance(code, str):
        if code in _PG_TRANSIENT or code in _PG_CONNECTION or code.startswith("08"):
            return "transient"
        return "fatal"
    err = _driver_error(exc)
    module = type(err).__module__ or ""
    if module.startswith("sqlite3"):
        if isinstance(code, int) and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return "transient"
        text = str(err).lower()
        return "transient" if "database is locked" in text or "database table is locked" in text else "fatal"
    if isinstance(code, int):
        return "transient" if code in _MYSQL_TRANSIENT or code in _MYSQL_CONNECTION else "fatal"
    if _is_connection_failure(err):
        return "transient"  # not during COMMIT (that is marked): the server dropped all of the transaction
    return "fatal"


def _is_connection_failure(err: BaseException) -> bool:
    """A driver error with no code that says the connection is gone (psycopg2: no pgcode, closed socket)."""
    module = type(err).__module__ or ""
    if not module.startswith(("psycopg2", "psycopg")):
        return False
    name = type(err).__name__
    return name in ("OperationalError", "InterfaceError") and getattr(err, "pgcode", None) is None
