"""The connection section of the _pony door: side connections and SQLite file names."""

from __future__ import annotations

from typing import Any

import pytest
from pony.orm import Database, Required, db_session

import ponykit as pk
from ponykit import _pony


def test_side_connection_is_separate_and_autocommit(db: Database, backend: Any) -> None:
    """A side connection is not the session's, and what it writes is visible at once (autocommit)."""

    class Note(db.Entity):
        text = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    if backend.name == "sqlite":
        return  # side connections serve server-side locks: PostgreSQL and MariaDB only
    side = _pony.open_side_connection(db)
    try:
        with db_session:
            session_con = _pony.raw_connection(db)
            assert session_con is not side
            cursor = side.cursor()
            cursor.execute("INSERT INTO note (text) VALUES ('from the side')")
        with db_session:
            assert Note.get(text="from the side") is not None
    finally:
        side.close()


@pytest.mark.backends("sqlite")
def test_sqlite_filename(db: Database, tmp_path: Any) -> None:
    """The file of a file database; None for an in-memory one."""
    on_disk = Database()
    on_disk.bind("sqlite", str(tmp_path / "x.db"), create_db=True)
    assert _pony.sqlite_filename(on_disk) == str(tmp_path / "x.db")
    in_memory = Database()
    in_memory.bind("sqlite", ":memory:")
    assert _pony.sqlite_filename(in_memory) is None
    on_disk.disconnect()
