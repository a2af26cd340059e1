"""The migration lock: exclusive, released on exit, and a waiter fails fast naming the holder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pony.orm import Database

import ponykit
from conftest import Backend
from ponykit import migrate
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


HOLDER = """
import sys, time
from pony.orm import Database
import ponykit
from ponykit.migrate._connect import open_connection
from ponykit.migrate._lock import migration_lock, sqlite_begin

db = Database()
ponykit.bind_url(db, sys.argv[1])
con = open_connection(db)
with migration_lock(con, 5):
    if con.dialect == "sqlite":
        sqlite_begin(con, 5)
    print("held", flush=True)
    time.sleep(20)
"""


def test_upgrade_fails_fast_while_another_process_holds_the_lock(backend: Backend, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p and "site-packages" not in p))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, backend.url], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        db = Database()
        ponykit.bind_url(db, backend.url)
        started = time.monotonic()
        with pytest.raises(MigrationLockTimeout):
            migrate.upgrade(db, directory=tmp_path / "migrations", lock_timeout=1)
        assert time.monotonic() - started < 5
        db.disconnect()
    finally:
        holder.kill()
        holder.wait()
