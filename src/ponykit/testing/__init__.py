"""pytest plugin: an application's own Database under test, fixtures to test code that uses Pony and ponykit.

Registered through the ``pytest11`` entry point, so it is active wherever ponykit is installed (or
enable it with ``-p ponykit.testing``). Nothing runs unless configured or a test asks.

An application's test suite names its Database in the ini file (see docs/testing.md)::

    [pytest]
    ponykit_database = app.models:db
    ponykit_test_url = postgresql://postgres@127.0.0.1/app_test   ; default: SQLite in memory

and the plugin binds that Database to the test database (also when the application binds it at import
with ``pk.bind_url`` to its production URL, which is then never connected to), creates its tables once,
runs every test inside a transaction rolled back at its end, and drops the tables at the end of the
run. ``pk_db`` is the Database, ready. Tests marked ``@pytest.mark.ponykit_transactional`` commit for
real and get their tables emptied afterwards instead. Under pytest-xdist each worker has its own database.

For ponykit's in-memory Database of entities declared inside a test::

    def test_listing(ponykit_db, assert_max_queries):
        class Book(ponykit_db.Entity):
            title = Required(str)
        ponykit_db.generate_mapping(create_tables=True)
        with db_session, assert_max_queries(1):
            list(Book.select())

Fixtures:

* ``pk_db``: the application's Database (``ponykit_database``), bound to the test database, tables
  created, the test isolated from every other.
* ``ponykit_db``: a fresh Database bound to an in-memory SQLite database (shared by every thread of
  the test) and attached to ponykit, not mapped yet (declare entities, then
  ``generate_mapping(create_tables=True)``). Disconnected after the test.
* ``count_queries``, ``assert_max_queries``, ``detect_n_plus_one``: the functions of
  :mod:`ponykit.diagnostics`, as fixtures. Like the functions, they count the statements of every
  thread by default (a request served by a test client's worker thread is counted); pass
  ``threads="current"`` for the calling thread only.

Contract tests for users' own extensions (subclass one in a test module, provide its fixtures; every
``test_*`` method then runs against your implementation):

* :class:`CacheBackendContract`: what a cache backend must do (the :class:`~ponykit.query.backends.
  CacheBackend` protocol); provide a ``backend`` fixture.
* :class:`AttributeTypeContract`: what an attribute type must do (round trip through a real Database,
  validation errors naming the attribute, None, JSON, queries); provide ``attribute_type`` and
  ``sample_values``.

See docs/testing.md for examples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ._appdb import isolated
from ._assertions import (
    StatementLog,
    add_options,
    assert_sql_contains,
    assert_sql_contains_fixture,
    capture_statements,
    sql_snapshot_fixture,
)
from ._contracts import AttributeTypeContract, CacheBackendContract, ManualClock
from .factories import Factory, factory

__all__ = [
    "AttributeTypeContract",
    "CacheBackendContract",
    "Factory",
    "ManualClock",
    "StatementLog",
    "assert_max_queries",
    "assert_sql_contains",
    "assert_sql_contains_fixture",
    "capture_statements",
    "count_queries",
    "detect_n_plus_one",
    "factory",
    "isolated",
    "pk_db",
    "ponykit_db",
    "pytest_addoption",
    "pytest_configure",
    "pytest_unconfigure",
    "sql_snapshot_fixture",
]

_APP: pytest.StashKey[Any] = pytest.StashKey()


# ---------------------------------------------------------------------------------------------------------
# The application's Database


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ini options of an application's test suite, and the snapshot update flag."""
    add_options(parser)
    parser.addini("ponykit_database", "the application's Database, as module:attribute (app.models:db)")
    parser.addini(
        "ponykit_test_url",
        "the test database URL (default sqlite://:sharedmemory:; PONYKIT_TEST_URL overrides it); a server "
        "database's name must contain 'test'",
    )
    parser.addini(
        "ponykit_isolation",
        "rollback (default: each test in a transaction rolled back), truncate or recreate (tables "
        "emptied, or dropped and created, after each test)",
    )
    parser.addini(
        "ponykit_run_on_commit",
        "run on_commit callbacks of the tests' commits (default true)",
        type="bool",
        default=True,
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; bind the application's Database to the test database when configured."""
    config.addinivalue_line(
        "markers",
        "ponykit_transactional: the test commits for real (threads, other processes); the tables are "
        "emptied after it instead of rolled back",
    )
    if not str(config.getini("ponykit_database") or "").strip():
        return
    if config.pluginmanager.hasplugin("dsession") and not hasattr(config, "workerinput"):
        return  # the pytest-xdist controller runs no test: each worker sets up its own database
    from ._appdb import configure_app_database

    config.stash[_APP] = configure_app_database(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Drop the tables (and a worker's database) at the end of the run."""
    app = config.stash.get(_APP, None)
    if app is None:
        return
    from ._appdb import drop_worker_database

    try:
        app.teardown_schema()
    finally:
        drop_worker_database(app)


@pytest.fixture(scope="session")
def _ponykit_app_schema(request: pytest.FixtureRequest) -> Any:
    app = request.config.stash.get(_APP, None)
    if app is not None and not app.ready:
        app.setup_schema()
        if not app.run_on_commit:
            from ..kit import get_kit

            kit = get_kit(app.database())
            if kit is not None:
                kit.run_commit_callbacks = False
    return app


@pytest.fixture(autouse=True)
def _ponykit_isolation(request: pytest.FixtureRequest) -> Iterator[None]:
    # Every test of a configured suite, not only those asking for pk_db: a test that writes through the
    # application's code without the fixture must not leave rows behind either.
    if request.config.stash.get(_APP, None) is None:
        yield
        return
    app = request.getfixturevalue("_ponykit_app_schema")
    transactional = request.node.get_closest_marker("ponykit_transactional") is not None
    app.begin_test(transactional)
    try:
        yield
    finally:
        app.end_test(transactional)


@pytest.fixture
def pk_db(request: pytest.FixtureRequest) -> Any:
    """The application's Database (ini ``ponykit_database``): bound to the test database, its tables
    created, this test's writes rolled back (or emptied for ``ponykit_transactional`` tests) at its end."""
    app = request.config.stash.get(_APP, None)
    if app is None:
        pytest.fail(
            "pk_db: no application Database configured; add `ponykit_database = app.models:db` (your "
            "module:attribute) to the [pytest] section of pytest.ini or pyproject.toml",
            pytrace=False,
        )
    return app.database()


@pytest.fixture
def ponykit_db() -> Iterator[Any]:
    """A fresh, attached, in-memory SQLite Database for one test (declare entities, then map it).

    Every thread sees the same database, so code served by a worker thread (FastAPI's ``TestClient``)
    finds the tables the test created.
    """
    from pony.orm import Database

    from .. import kit
    from ..binding import bind_url

    db = Database()
    # Shared memory, not ":memory:": a request served on another thread (a test client's worker) must
    # see the same tables; Pony names each shared-memory database uniquely, so tests stay apart.
    bind_url(db, "sqlite://:sharedmemory:")
    kit.attach(db)
    yield db
    db.disconnect()
    kit.forget(db)


@pytest.fixture
def count_queries() -> Callable[..., Any]:
    """:func:`ponykit.diagnostics.count_queries`: ``with count_queries() as counter: ...``."""
    from ..diagnostics import count_queries as function

    return function


@pytest.fixture
def assert_max_queries() -> Callable[..., Any]:
    """:func:`ponykit.diagnostics.assert_max_queries`: ``with assert_max_queries(2): ...``."""
    from ..diagnostics import assert_max_queries as function

    return function


@pytest.fixture
def detect_n_plus_one() -> Callable[..., Any]:
    """:func:`ponykit.diagnostics.detect_n_plus_one`: ``with detect_n_plus_one(threshold=3): ...``."""
    from ..diagnostics import detect_n_plus_one as function

    return function
