"""pytest plugin: fixtures to test code that uses Pony and ponykit.

Registered through the ``pytest11`` entry point, so it is active wherever ponykit is installed (or
enable it with ``-p ponykit.testing``). It only defines fixtures; nothing runs unless a test asks::

    def test_listing(ponykit_db, assert_max_queries):
        class Book(ponykit_db.Entity):
            title = Required(str)
        ponykit_db.generate_mapping(create_tables=True)
        with db_session, assert_max_queries(1):
            list(Book.select())

Fixtures:

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

from ._assertions import (
    StatementLog,
    assert_sql_contains,
    assert_sql_contains_fixture,
    capture_statements,
    pytest_addoption,
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
    "ponykit_db",
    "pytest_addoption",
    "sql_snapshot_fixture",
]


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
