"""The migration lock: exclusive, released on exit, and a waiter fails fast naming the holder."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from pony.orm import Database

import ponykit
from conftest import Backend
from ponykit.errors import MigrationLockTimeout
from ponykit.migrate._connect import MigrationConnection, open_connection
from ponykit.migrate._lock import migration_lock, sqlite_begin


@pytest.fixture
def connect(backend: Backend) -> Iterator[Callable[[], MigrationConnection]]:
    db = Database()
    ponykit.bind_url(db, backend.url)
    made: list[MigrationConnection] = []

    def make() -> MigrationConnection:
        made.append(open_connection(db))
        return made[-1]

    yield make
    for con in made:
        con.close()
    db.disconnect()


def _take(con: MigrationConnection, timeout: float) -> None:
    """Take the lock as the runner does (SQLite: the lock context, then BEGIN IMMEDIATE)."""
    with migration_lock(con, timeout):
        if con.dialect == "sqlite":
            sqlite_begin(con, timeout)
            con.execute("ROLLBACK")


def test_waiter_times_out_fast_naming_the_holder(connect: Callable[[], MigrationConnection]) -> None:
    holder, waiter = connect(), connect()
    with migration_lock(holder, 5):
        if holder.dialect == "sqlite":
            sqlite_begin(holder, 5)
        started = time.monotonic()
        with pytest.raises(MigrationLockTimeout) as info:
            _take(waiter, 0.5)
        assert time.monotonic() - started < 3
        message = str(info.value)
        assert "lock" in message and "--lock-timeout" in message
        if holder.dialect == "postgres":
            pid = holder.scalar("SELECT pg_backend_pid()")
            assert f"pid {pid}" in message
        if holder.dialect == "mysql":
            assert f"connection id {holder.scalar('SELECT CONNECTION_ID()')}" in message
        if holder.dialect == "sqlite":
            holder.execute("ROLLBACK")
    _take(waiter, 0.5)  # released: the waiter gets it now


def test_lock_is_reentrant_across_sequential_holders(connect: Callable[[], MigrationConnection]) -> None:
    con = connect()
    for _ in range(3):
        _take(con, 1)
