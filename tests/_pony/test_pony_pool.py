"""The pool door (ponykit._pony.pool): connections made, reset and checked as the provider's pool does."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pony.orm import Database, Required

from ponykit import _pony


def _mapped(db: Database) -> Any:
    class Thing(db.Entity):  # type: ignore[name-defined]
        _table_ = "pk_thing"
        n = Required(int)

    db.generate_mapping(create_tables=True)
    return Thing


def _count(con: Any, table: str) -> int:
    cursor = con.cursor()
    cursor.execute(f"SELECT COUNT(*) FROM {table}")
    value = int(cursor.fetchone()[0])
    cursor.close()
    return value


def test_connection_factory_opens_new_connections_usable_from_any_thread(db: Database) -> None:
    _mapped(db)
    connect = _pony.connection_factory(db)
    first, second = connect(), connect()
    try:
        assert first is not second
        results: list[int] = []
        worker = threading.Thread(target=lambda: results.append(_count(first, "pk_thing")))
        worker.start()
        worker.join()
        assert results == [0]
        assert _pony.ping_connection(db, second)
    finally:
        first.close()
        second.close()


def test_native_pool_keeps_one_connection_per_thread(db: Database) -> None:
    _mapped(db)
    pool = _pony.native_pool(db, dict(_pony.pony_pool(db).kwargs))
    con, is_new = pool.connect()
    again, again_new = pool.connect()
    assert (is_new, again is con, again_new) == (True, True, False)
    other: list[Any] = []

    def elsewhere() -> None:
        c, _ = pool.connect()
        other.append(c)
        pool.disconnect()

    worker = threading.Thread(target=elsewhere)
    worker.start()
    worker.join()
    assert other[0] is not con
    pool.release(con)
    pool.disconnect()


def test_reset_rolls_back_what_the_connection_did_not_commit(db: Database) -> None:
    _mapped(db)
    connect = _pony.connection_factory(db)
    con, observer = connect(), connect()
    try:
        cursor = con.cursor()
        if _pony.dialect(db) == "sqlite":
            cursor.execute("BEGIN")  # Pony's SQLite connections are in autocommit until it begins
        cursor.execute("INSERT INTO pk_thing (n) VALUES (1)")
        cursor.close()
        _pony.reset_function(db)(con)
        assert _count(observer, "pk_thing") == 0
        assert _count(con, "pk_thing") == 0
    finally:
        con.close()
        observer.close()


@pytest.mark.backends("postgres")
def test_reset_discards_session_settings_on_postgres(db: Database) -> None:
    con = _pony.connection_factory(db)()
    try:
        cursor = con.cursor()
        cursor.execute("SELECT set_config('app.tenant', '7', false)")
        con.commit()
        _pony.reset_function(db)(con)
        cursor = con.cursor()
        cursor.execute("SELECT current_setting('app.tenant', true)")
        assert cursor.fetchone()[0] in (None, "")
        assert con.autocommit is False  # as Pony's pool leaves it
    finally:
        con.close()


def test_ping_tells_a_closed_connection(db: Database) -> None:
    con = _pony.connection_factory(db)()
    assert _pony.ping_connection(db, con)
    con.close()
    assert not _pony.ping_connection(db, con)


def test_in_memory_sqlite_is_told_apart() -> None:
    memory, shared = Database(), Database()
    memory.bind("sqlite", ":memory:")
    shared.bind("sqlite", ":sharedmemory:")
    assert _pony.is_in_memory_sqlite(memory) and _pony.is_in_memory_sqlite(shared)
