"""One connection in an outer transaction per test: the door for ``ponykit.testing``'s rollback isolation.

Pony ends every transaction with ``connection.commit()`` or ``connection.rollback()`` and returns the
connection to its pool with another ``rollback()``. :class:`OuterPool` stands in for the provider's pool of
one Database: every thread gets the same :class:`TestConnection`, on which those calls become savepoint
operations inside one outer transaction (``commit`` releases the savepoint and takes a new one,
``rollback`` goes back to it). Pony, ponykit's transaction hooks and ``on_commit`` callbacks see ordinary
commits; :meth:`OuterPool.end_test` rolls the outer transaction back, and the next test starts from the
same tables. While :attr:`OuterPool.active` is False the provider's own pool serves every call (tests
that need real commits).

The pool instance is replaced on this Database's provider only: other Databases are untouched.
"""

from __future__ import annotations

import threading
from typing import Any

from pony.orm import Database

from ..errors import ConfigurationError
from .database import dialect
from .pool import pony_pool

__all__ = [
    "OuterPool",
    "TestConnection",
    "install_outer_pool",
    "open_connection",
    "table_names",
    "truncate_tables",
]

_SAVEPOINT = "ponykit_test"


def open_connection(db: Database) -> Any:
    """A new DB-API connection made exactly as the provider's pool makes its own (Pony's SQL functions
    on SQLite, the client encoding on PostgreSQL), usable from any thread; owned by the caller."""
    pool = _original_pool(db)
    if dialect(db) == "sqlite":
        kwargs = {**pool.kwargs, "check_same_thread": False}
        fresh = type(pool)(pool.is_shared_memory_db, pool.filename, pool.create_db, **kwargs)
    else:
        fresh = type(pool)(pool.dbapi_module, *pool.args, **pool.kwargs)
    fresh._connect()
    con = fresh.con
    fresh.con = None
    return con


def table_names(db: Database) -> list[str]:
    """The quoted names of every table of the Database's mapping, link tables included."""
    provider = db.provider
    return [provider.quote_name(table.name) for table in db.schema.tables.values()]


def _original_pool(db: Database) -> Any:
    # The provider's own pool, under this module's OuterPool and under a bounded pool (ponykit.binding).
    return pony_pool(db)


class _TestCursor:
    """A cursor of the shared connection, watching the statements that would end the outer transaction
    or change it for the rest of the test.

    SQLite: Pony opens each write transaction with ``BEGIN IMMEDIATE``, which would fail inside the outer
    transaction; the savepoint stands in for it, so ``BEGIN`` is skipped. ``SET TRANSACTION`` (an isolation
    level, read-only mode: Pony's ``serializable=True``, ponykit's ``transaction(isolation=...)``) cannot
    apply to one inner transaction: it is refused with a message instead of failing obscurely or, on
    PostgreSQL, making the rest of the test read-only.
    """

    def __init__(self, cursor: Any, dialect_name: str, lock: threading.RLock) -> None:
        self._cursor = cursor
        self._dialect = dialect_name
        self._lock = lock  # threads of a test share the connection: one statement at a time on the wire

    def execute(self, sql: Any, *args: Any) -> Any:
        # Text, or bytes (psycopg2's execute_values); a composed statement is never one of these two.
        text = (
            sql if isinstance(sql, str) else sql.decode("utf-8", "replace") if isinstance(sql, bytes) else ""
        )
        head = text.lstrip()[:16].upper()
        if head.startswith("BEGIN") and self._dialect == "sqlite":
            return self
        if head.startswith("SET TRANSACTION"):
            raise ConfigurationError(
                f"ponykit.testing: {text.strip()[:60]!r} cannot run inside the test's outer transaction "
                "(rollback isolation): an isolation level or read-only mode applies to a whole real "
                "transaction. Mark the test @pytest.mark.ponykit_transactional to run it with real commits."
            )
        with self._lock:
            self._cursor.execute(sql, *args)
        return self

    def executemany(self, sql: Any, *args: Any) -> Any:
        with self._lock:
            self._cursor.executemany(sql, *args)
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __iter__(self) -> Any:
        return iter(self._cursor)

    def __enter__(self) -> _TestCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._cursor.close()


class TestConnection:
    """The connection every thread of a test shares; commit and rollback are savepoint operations."""

    __test__ = False  # not a pytest test class

    def __init__(self, real: Any, dialect_name: str) -> None:
        self.__dict__["_real"] = real
        self.__dict__["_dialect"] = dialect_name
        self.__dict__["in_outer"] = False
        self.__dict__["depth"] = 0  # nested isolated blocks (one hypothesis example each)
        self.__dict__["lock"] = threading.RLock()

    # psycopg2's ``autocommit`` is a property Pony flips for reads; the outer transaction must stay.
    @property
    def autocommit(self) -> Any:
        if self._dialect == "postgres":
            return False
        return self._real.autocommit

    @autocommit.setter
    def autocommit(self, value: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "autocommit":
            return
        setattr(self._real, name, value)

    @property
    def real(self) -> Any:
        """The driver's connection."""
        return self._real

    def _run(self, sql: str) -> None:
        with self.lock:
            cursor = self._real.cursor()
            try:
                cursor.execute(sql)
            finally:
                cursor.close()

    def begin(self) -> None:
        """Open the outer transaction and its first savepoint."""
        if self._dialect == "sqlite":
            self._run("BEGIN")
        elif self._dialect == "mysql":
            self._run("START TRANSACTION")
        elif self._real.autocommit:
            self._real.autocommit = False
        self._run(f"SAVEPOINT {_SAVEPOINT}")
        self.__dict__["in_outer"] = True
        self.__dict__["depth"] = 0

    @property
    def _savepoint(self) -> str:
        # The savepoint the inner transactions commit to: the innermost block's own.
        return f"{_SAVEPOINT}_{self.depth}" if self.depth else _SAVEPOINT

    def push(self) -> None:
        """Begin a nested block whose writes, committed or not, :meth:`pop` undoes."""
        depth = self.depth + 1
        self._run(f"SAVEPOINT ponykit_block_{depth}")
        self.__dict__["depth"] = depth
        self._run(f"SAVEPOINT {self._savepoint}")

    def pop(self) -> None:
        """Undo everything since the matching :meth:`push`."""
        depth = self.depth
        self.__dict__["depth"] = depth - 1
        self._run(f"ROLLBACK TO SAVEPOINT ponykit_block_{depth}")
        self._run(f"RELEASE SAVEPOINT ponykit_block_{depth}")

    def end(self) -> None:
        """Roll the outer transaction back: nothing the test wrote remains."""
        if self.in_outer:
            self.__dict__["in_outer"] = False
            self._real.rollback()

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        return _TestCursor(self._real.cursor(*args, **kwargs), self._dialect, self.lock)

    def commit(self) -> None:
        """The inner transaction's commit: what it wrote stays until the test ends."""
        self._run(f"RELEASE SAVEPOINT {self._savepoint}")
        self._run(f"SAVEPOINT {self._savepoint}")

    def rollback(self) -> None:
        """The inner transaction's rollback: back to the state of its last commit."""
        try:
            self._run(f"ROLLBACK TO SAVEPOINT {self._savepoint}")
        except Exception:  # noqa: BLE001 - any driver error: the savepoint is gone
            # MariaDB rolls the whole transaction back on a deadlock or lock timeout, savepoints and all:
            # start a new outer transaction so that the test can go on (its earlier rows are gone, as
            # they would be after such an error outside tests).
            self._real.rollback()
            self.__dict__["in_outer"] = False
            self.begin()

    def close(self) -> None:
        """Kept open: the pool owns the connection."""


class OuterPool:
    """The pool of a Database under test: one shared :class:`TestConnection` while :attr:`active`."""

    def __init__(self, db: Database, original: Any) -> None:
        self.db = db
        self.original = original
        self.active = True
        self.connection: TestConnection | None = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        # filename, dbapi_module, args ...: what ponykit reads of a pool comes from the provider's own.
        return getattr(self.original, name)

    def connect(self) -> tuple[Any, bool]:
        if not self.active:
            return self.original.connect()  # type: ignore[no-any-return]
        with self._lock:
            fresh = self.connection is None
            if self.connection is None:
                self.connection = TestConnection(open_connection(self.db), dialect(self.db))
            if not self.connection.in_outer:
                self.connection.begin()
            return self.connection, fresh

    def release(self, con: Any) -> None:
        if isinstance(con, TestConnection):
            con.rollback()  # as Pony's pool does: what was not committed goes
        else:
            self.original.release(con)

    def drop(self, con: Any) -> None:
        if isinstance(con, TestConnection):
            con.rollback()
        else:
            self.original.drop(con)

    def disconnect(self) -> None:
        if not self.active:
            self.original.disconnect()

    def push(self) -> None:
        """Begin a nested block on the shared connection (see :meth:`TestConnection.push`)."""
        connection, _ = self.connect()
        connection.push()

    def pop(self) -> None:
        """End the innermost nested block, undoing its writes."""
        with self._lock:
            assert self.connection is not None
            self.connection.pop()

    def end_test(self) -> None:
        """Roll back everything the test wrote (the next test starts a new outer transaction)."""
        with self._lock:
            if self.connection is not None:
                self.connection.end()

    def close(self) -> None:
        """Close the shared connection (at the end of the run)."""
        with self._lock:
            if self.connection is not None:
                self.connection.end()
                self.connection.real.close()
                self.connection = None


def install_outer_pool(db: Database) -> OuterPool:
    """Put an :class:`OuterPool` in place of ``db``'s pool (once); the pool."""
    provider = db.provider
    if isinstance(provider.pool, OuterPool):
        return provider.pool
    pool = OuterPool(db, provider.pool)
    provider.pool = pool
    return pool


def truncate_tables(db: Database) -> None:
    """Empty every table of ``db``'s mapping on a connection of its own and commit (key sequences start
    again on PostgreSQL and MariaDB; SQLite's AUTOINCREMENT counters too)."""
    names = table_names(db)
    name = dialect(db)
    con = open_connection(db)
    try:
        cursor = con.cursor()
        if name == "postgres":
            cursor.execute(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE")
        elif name == "mysql":
            cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
            for table in names:
                cursor.execute(f"TRUNCATE TABLE {table}")
            cursor.execute("SET FOREIGN_KEY_CHECKS = 1")
        else:
            cursor.execute("PRAGMA foreign_keys = OFF")
            for table in names:
                cursor.execute(f"DELETE FROM {table}")
            cursor.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'")
            if cursor.fetchone():
                cursor.execute("DELETE FROM sqlite_sequence")
            cursor.execute("PRAGMA foreign_keys = ON")
        con.commit()
    finally:
        con.close()
