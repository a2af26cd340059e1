"""The version table: created idempotently, rows written, read back and deleted, on every backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pony.orm import Database

import ponykit
from conftest import Backend
from ponykit.migrate._connect import MigrationConnection, open_connection
from ponykit.migrate._versions import TABLE, delete_row, ensure_table, read_rows, table_exists, write_row


@pytest.fixture
def con(backend: Backend) -> Iterator[MigrationConnection]:
    db = Database()
    ponykit.bind_url(db, backend.url)
    connection = open_connection(db)
    yield connection
    connection.close()
    db.disconnect()


def test_created_once_and_empty(con: MigrationConnection) -> None:
    assert read_rows(con) == {}
    assert not table_exists(con)
    ensure_table(con)
    ensure_table(con)  # idempotent
    assert table_exists(con)
    assert read_rows(con) == {}


def test_rows_round_trip(con: MigrationConnection) -> None:
    ensure_table(con)
    write_row(con, "0001_aaaaaa", (), "a" * 64, "partial", 2)
    write_row(con, "0002_bbbbbb", ("0001_aaaaaa",), "b" * 64, "applied", 5, 120)
    rows = read_rows(con)
    assert set(rows) == {"0001_aaaaaa", "0002_bbbbbb"}
    first, second = rows["0001_aaaaaa"], rows["0002_bbbbbb"]
    assert (first.status, first.steps_done, first.parents, first.checksum) == ("partial", 2, (), "a" * 64)
    assert (second.parents, second.duration_ms, second.status) == (("0001_aaaaaa",), 120, "applied")
    assert second.ponykit_version == ponykit.__version__
    write_row(con, "0001_aaaaaa", (), "a" * 64, "applied", 3)  # replaces the partial row
    assert read_rows(con)["0001_aaaaaa"].status == "applied"
    delete_row(con, "0002_bbbbbb")
    assert set(read_rows(con)) == {"0001_aaaaaa"}
    assert con.scalar(f"SELECT count(*) FROM {TABLE}") == 1
