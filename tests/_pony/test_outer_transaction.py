"""The outer-transaction pool (ponykit.testing's rollback isolation), on one Database of each backend."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pony.orm import Database, Required, commit, db_session, rollback, select

from ponykit import _pony


@pytest.fixture
def mapped(db: Database) -> Any:
    class Row(db.Entity):
        text = Required(str)

    db.generate_mapping(create_tables=True)
    return Row


@pytest.fixture
def pool(db: Database, mapped: Any) -> Iterator[Any]:
    """The outer-transaction pool of ``db``, closed whatever the test did (an outer transaction left
    open would hold locks the backend's teardown waits on)."""
    outer = _pony.install_outer_pool(db)
    try:
        yield outer
    finally:
        outer.close()


def _texts(entity: Any) -> list[str]:
    with db_session:
        return sorted(select(r.text for r in entity))


def test_commits_are_kept_until_the_test_ends(db: Database, mapped: Any, pool: Any) -> None:
    assert _pony.install_outer_pool(db) is pool  # installed once
    with db_session:
        mapped(text="a")
    with db_session:
        mapped(text="b")
        commit()
        mapped(text="c")
        rollback()
    assert _texts(mapped) == ["a", "b"]
    seen: list[list[str]] = []
    thread = threading.Thread(target=lambda: seen.append(_texts(mapped)))
    thread.start()
    thread.join()
    assert seen == [["a", "b"]]  # another thread shares the connection
    pool.end_test()
    assert _texts(mapped) == []


def test_a_failed_session_goes_back_to_the_last_commit(db: Database, mapped: Any, pool: Any) -> None:
    with db_session:
        mapped(text="kept")
    with pytest.raises(ZeroDivisionError), db_session:
        mapped(text="lost")
        mapped.select().count()  # flushed
        raise ZeroDivisionError
    assert _texts(mapped) == ["kept"]


def test_nested_blocks_undo_their_own_writes_only(db: Database, mapped: Any, pool: Any) -> None:
    with db_session:
        mapped(text="outer")
    pool.push()
    with db_session:
        mapped(text="inner")
    pool.push()
    with db_session:
        mapped(text="innermost")
    assert _texts(mapped) == ["inner", "innermost", "outer"]
    pool.pop()
    assert _texts(mapped) == ["inner", "outer"]
    pool.pop()
    assert _texts(mapped) == ["outer"]
    pool.end_test()
    assert _texts(mapped) == []


def test_an_inactive_pool_commits_for_real_and_truncation_empties(
    db: Database, mapped: Any, pool: Any
) -> None:
    pool.active = False
    with db_session:
        mapped(text="real")
    pool.active = True
    pool.end_test()
    assert _texts(mapped) == ["real"]
    pool.end_test()  # the read above opened an outer transaction: it would block the truncation
    pool.active = False
    _pony.truncate_tables(db)
    assert _texts(mapped) == []


def test_set_transaction_is_refused_inside_the_outer_transaction(
    db: Database, mapped: Any, pool: Any
) -> None:
    from ponykit.errors import ConfigurationError

    with db_session:
        cursor = db.get_connection().cursor()
        with pytest.raises(ConfigurationError, match="ponykit_transactional"):
            cursor.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
