"""ponykit._pony.connection: taking a lost connection out of Pony's hands, tested on every backend.

The fault itself (a killed connection) is in test_transactions_connection_loss.py on the server backends;
here the functions run on a healthy connection, which they treat as lost.
"""

from __future__ import annotations

from typing import Any

import pytest
from pony.orm import Database, Required, db_session, flush, rollback

import ponykit as pk
from ponykit import _pony


class Lost(Exception):
    pass


def test_lost_connection_refuses_statements_and_commit_but_rolls_back() -> None:
    """cursor() and commit() raise a fresh error each time; rollback() and close() do nothing."""
    made: list[Lost] = []

    def make() -> Lost:
        made.append(Lost(f"lost #{len(made)}"))
        return made[-1]

    stand_in = _pony.LostConnection(make)
    assert _pony.is_lost_connection(stand_in)
    with pytest.raises(Lost, match="#0"):
        stand_in.cursor()
    with pytest.raises(Lost, match="#1"):
        stand_in.commit()
    stand_in.rollback()
    stand_in.close()
    assert isinstance(stand_in.error(), Lost) and len(made) == 3
    assert not _pony.is_lost_connection(object())
    assert "Lost" in repr(stand_in)


def test_abandon_connection_keeps_the_transaction_and_drops_the_connection(db: Database) -> None:
    """The session keeps a transaction no statement can use; the next session gets a new connection."""

    class Item(db.Entity):
        name = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        Item(name="flushed")
        flush()
        cache = _pony.session_cache(db)
        assert cache is not None
        real = cache.connection
        _pony.abandon_connection(cache, lambda: Lost("gone"))
        assert _pony.is_lost_connection(cache.connection)
        assert _pony.is_in_transaction(cache)
        with pytest.raises(Lost):
            Item.select().count()
        rollback()
    with db_session:
        # The abandoned connection was closed with its open transaction: the flushed row went with it.
        assert Item.select().count() == 0
        cache = _pony.session_cache(db)
        assert cache is not None and cache.connection is not real


def test_abandon_connection_twice_is_harmless(db: Database) -> None:
    """A cache that already holds the stand-in just gets a new one (nothing left to drop)."""

    class Item(db.Entity):
        name = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with pytest.raises(Lost), db_session:
        Item(name="x")
        flush()
        cache: Any = _pony.session_cache(db)
        _pony.abandon_connection(cache, lambda: Lost("first"))
        _pony.abandon_connection(cache, lambda: Lost("second"))
        with pytest.raises(Lost, match="second"):
            Item.select().count()
        raise Lost("end the session by exception")
    with db_session:
        assert Item.select().count() == 0


def test_describe_database_names_backend_and_database(backend: Any, db: Database) -> None:
    """Which database, for error messages: the provider family and (for servers) name and host."""
    text = _pony.describe_database(db)
    assert text.startswith(f"{backend.name} database")
    if backend.name != "sqlite":
        _provider, kwargs = pk.parse_url(backend.url)
        name = kwargs.get("database") or kwargs.get("dbname") or kwargs.get("db")
        assert repr(str(name)) in text and "at " in text
    assert "password" not in text and "passwd" not in text


def test_describe_database_never_shows_a_password() -> None:
    """Only the database name and host are read from the connection arguments, never a password."""
    db = Database()
    pk.bind_url(db, "sqlite://:memory:")
    pool = db.provider.pool
    saved = pool.kwargs
    pool.kwargs = {"database": "app", "host": "h", "password": "hunter2", "passwd": "hunter2"}
    try:
        assert _pony.describe_database(db) == "sqlite database 'app' at h"
    finally:
        pool.kwargs = saved
        db.disconnect()
