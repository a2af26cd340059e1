"""The application's Database under test: which one, bound where, its schema and its isolation (private).

Configured by the ini options ``ponykit_database`` (``app.models:db``) and ``ponykit_test_url`` (or the
environment variable ``PONYKIT_TEST_URL``). At ``pytest_configure`` the plugin installs a bind hook and
imports the application's module, so a ``pk.bind_url(db, production_url)`` at import binds the test
database instead (the production URL is never connected to); a Database the module leaves unbound is
bound there right after. Under pytest-xdist each worker gets its own database (``<name>_gw0``) or SQLite
file, created at configure and dropped at unconfigure.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from pony.orm import Database

from .. import _pony
from ..binding import bind_direct, parse_url, redact_url, set_bind_hook

__all__ = [
    "ISOLATION_MODES",
    "AppDatabase",
    "configure_app_database",
    "drop_worker_database",
    "isolated",
    "test_url_of",
]

DEFAULT_URL = "sqlite://:sharedmemory:"
ISOLATION_MODES = ("rollback", "truncate", "recreate")
_NAME_RE = re.compile(r"[A-Za-z0-9_]+")


@dataclass
class AppDatabase:
    """The application's Database in this test process, and how its tests are kept apart."""

    spec: str  # "app.models:db"
    url: str  # the test database of this process (this worker's under xdist)
    isolation: str  # one of ISOLATION_MODES
    run_on_commit: bool
    worker: str | None = None
    db: Database | None = None
    redirected: list[str] = field(default_factory=list)  # production URLs not connected to (redacted)
    created_database: str | None = None  # a worker's database, dropped at the end
    pool: Any = None  # the OuterPool once the schema is ready
    ready: bool = False

    # -- the run ---------------------------------------------------------------------------------------

    def setup_schema(self) -> None:
        """Create the tables from the models (once per process); then install the outer-transaction pool."""
        db = self.database()
        if not _pony.is_mapped(db):
            db.generate_mapping(create_tables=False, check_tables=False)
        # Tables left by an interrupted earlier run may hold rows, or an older shape: start clean.
        db.drop_all_tables(with_all_data=True)
        db.create_tables()
        self.pool = _pony.install_outer_pool(db)
        self.pool.active = self.isolation == "rollback"
        self.ready = True

    def teardown_schema(self) -> None:
        """Close the shared connection and drop the tables (the end of the run)."""
        if not self.ready:
            return
        db = self.database()
        self.pool.close()
        self.pool.active = False
        try:
            db.drop_all_tables(with_all_data=True)
        finally:
            db.disconnect()
            self.ready = False

    def database(self) -> Database:
        assert self.db is not None
        return self.db

    # -- one test -------------------------------------------------------------------------------------

    def begin_test(self, transactional: bool) -> None:
        """Before a test: real commits for a transactional test (or the truncate/recreate modes)."""
        self.pool.active = self.isolation == "rollback" and not transactional

    def end_test(self, transactional: bool) -> None:
        """After a test: roll its outer transaction back, or empty (or recreate) the tables."""
        db = self.database()
        was_active = self.pool.active
        # Whatever happened, no outer transaction may stay open: it would hold locks the truncation waits on.
        self.pool.end_test()
        if was_active:
            pass  # rolled back: nothing to empty
        elif self.isolation == "recreate" and not transactional:
            db.drop_all_tables(with_all_data=True)
            db.create_tables()
        else:
            _pony.truncate_tables(db)
        self.pool.active = self.isolation == "rollback"
        _reset_cache(db)


# The application's Database of this process, once configured (for isolated()).
current: list[AppDatabase] = []


@contextmanager
def isolated() -> Iterator[None]:
    """Undo at the end of the block everything written inside it, committed or not.

    For the examples of a property test: hypothesis runs them all inside one test, so without this the
    rows of one example are still there in the next (a unique name made twice fails). Under rollback
    isolation the block is a savepoint; in a ``ponykit_transactional`` test or the truncate/recreate
    modes the tables are emptied at its end. The block must not be inside a ``db_session``.
    """
    app = current[0] if current else None
    if app is None or not app.ready:
        raise RuntimeError(
            "ponykit.testing.isolated() works on the application's Database of the plugin: set "
            "ponykit_database in the ini file and use the pk_db fixture"
        )
    nested = app.pool.active
    if nested:
        app.pool.push()
    try:
        yield
    finally:
        if nested:
            app.pool.pop()
        else:
            app.pool.end_test()
            _pony.truncate_tables(app.database())
        _reset_cache(app.database())


def _reset_cache(db: Database) -> None:
    from ..kit import get_kit

    kit = get_kit(db)
    if kit is not None and kit.cache is not None:
        kit.cache.clear()


# ---------------------------------------------------------------------------------------------------------
# Configuration


def test_url_of(config: pytest.Config) -> str:
    """The test database URL: ``PONYKIT_TEST_URL``, else the ini option, else in-memory SQLite."""
    return os.environ.get("PONYKIT_TEST_URL") or str(config.getini("ponykit_test_url") or "") or DEFAULT_URL


def configure_app_database(config: pytest.Config) -> AppDatabase | None:
    """Resolve, redirect and bind the application's Database (None when ``ponykit_database`` is unset)."""
    spec = str(config.getini("ponykit_database") or "").strip()
    if not spec:
        return None
    isolation = str(config.getini("ponykit_isolation") or "rollback").strip()
    if isolation not in ISOLATION_MODES:
        raise pytest.UsageError(
            f"ponykit_isolation = {isolation!r}: expected one of {', '.join(ISOLATION_MODES)} (rollback, the "
            "default, runs each test in a transaction rolled back at its end)"
        )
    url = test_url_of(config)
    _refuse_non_test_url(url)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    app = AppDatabase(spec, url, isolation, bool(config.getini("ponykit_run_on_commit")), worker)
    if worker:
        app.url, app.created_database = _worker_database(url, worker)
    _import_and_bind(app)
    current[:] = [app]
    return app


def _refuse_non_test_url(url: str) -> None:
    provider, kwargs = parse_url(url)
    if provider == "sqlite":
        return
    name = str(kwargs.get("database") or kwargs.get("db") or kwargs.get("dbname") or "")
    if "test" not in name.lower():
        raise pytest.UsageError(
            f"ponykit: the test database URL {redact_url(url)} names the database {name or '(none)'!r}, "
            "whose name does not contain 'test'. The plugin creates and drops tables there and empties them "
            "between tests; point ponykit_test_url (or PONYKIT_TEST_URL) at a throwaway database named "
            "like app_test."
        )


def _worker_database(url: str, worker: str) -> tuple[str, str | None]:
    """This xdist worker's URL, and the database created for it (None for SQLite)."""
    provider, _ = parse_url(url)
    parts = urlsplit(url)
    if provider == "sqlite":
        path = parts.netloc + parts.path
        if ":memory:" in path or ":sharedmemory:" in path:
            return url, None  # each worker process has its own memory
        stem, dot, suffix = parts.path.rpartition(".")
        new_path = f"{stem}_{worker}.{suffix}" if dot else f"{parts.path}_{worker}"
        return urlunsplit(parts._replace(path=new_path)), None
    base = parts.path.lstrip("/")
    name = f"{base}_{worker}"
    if not _NAME_RE.fullmatch(name):
        raise pytest.UsageError(f"ponykit: cannot derive a worker database name from {redact_url(url)}")
    if provider == "postgres":
        _administer(url, "SELECT 1 FROM pg_database WHERE datname = %s", name, f'CREATE DATABASE "{name}"')
    else:
        _administer(url, None, name, f"CREATE DATABASE IF NOT EXISTS `{name}`")
    return urlunsplit(parts._replace(path=f"/{name}")), name


def drop_worker_database(app: AppDatabase) -> None:
    """Drop the database created for this xdist worker."""
    name = app.created_database
    if name is None:
        return
    base = urlunsplit(urlsplit(app.url)._replace(path="/" + name.rsplit("_", 1)[0]))
    provider, _ = parse_url(base)
    if provider == "postgres":
        _administer(base, None, name, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        _administer(base, None, name, f"DROP DATABASE IF EXISTS `{name}`")


def _administer(url: str, unless: str | None, name: str, statement: str) -> None:
    """Run ``statement`` on a connection of its own to ``url`` (autocommit: CREATE/DROP DATABASE cannot
    run in a transaction), unless the query ``unless`` finds ``name``."""
    admin = Database()
    bind_direct(admin, url)
    try:
        con = _pony.open_side_connection(admin)
        try:
            cursor = con.cursor()
            if unless is not None:
                cursor.execute(unless, (name,))
                if cursor.fetchone() is not None:
                    return
            cursor.execute(statement)
        finally:
            con.close()
    finally:
        admin.disconnect()


def _import_and_bind(app: AppDatabase) -> None:
    """Import the application's module with binds redirected, then bind its Database if it is not."""
    module_name, _, attr = app.spec.partition(":")
    if not module_name or not attr:
        raise pytest.UsageError(
            f"ponykit_database = {app.spec!r}: expected 'module:attribute', for example app.models:db"
        )
    bound_here: set[int] = set()

    def redirect(db: Database, url: str) -> bool:
        if app.db is not None and db is not app.db:
            return False  # another Database, bound after the application's was found: left alone
        if id(db) in bound_here:
            return True  # the application binds again (an app factory): it is bound already
        app.redirected.append(redact_url(url))
        bind_direct(db, app.url)
        bound_here.add(id(db))
        return True

    previous = set_bind_hook(redirect)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        set_bind_hook(previous)
        raise pytest.UsageError(
            f"ponykit_database = {app.spec!r}: importing {module_name} failed: {type(exc).__name__}: {exc}. "
            f"It was bound to the test database {redact_url(app.url)}; if the module maps its entities at "
            "import (generate_mapping) and that database holds tables of another shape, empty it first"
        ) from exc
    db = getattr(module, attr, None)
    if not isinstance(db, Database):
        set_bind_hook(previous)
        given = "nothing" if db is None else f"a {type(db).__name__}"
        raise pytest.UsageError(
            f"ponykit_database = {app.spec!r}: {module_name}.{attr} is {given}, not a pony.orm.Database"
        )
    app.db = db
    if db.provider is None:
        bind_direct(db, app.url)
        bound_here.add(id(db))
    elif id(db) not in bound_here:
        set_bind_hook(previous)
        raise pytest.UsageError(
            f"ponykit: {app.spec} was bound with Database.bind() while {module_name} was imported, so "
            "the plugin could not point it at the test database. Bind it with ponykit.bind_url(db, url) "
            "(the plugin redirects that to the test database), or bind it in a function the "
            "application calls at start-up."
        )
