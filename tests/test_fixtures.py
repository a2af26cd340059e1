"""The test fixture family itself: isolation per test, and the Redis service."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pony.orm import Database, Required, db_session

import ponykit as pk
from conftest import ENV_VARS


def test_each_test_gets_its_own_schema(db: Database, backend: Any) -> None:
    """Tables created by a test live in its private schema/database, not in the shared base database."""

    class Isolated(db.Entity):
        _table_ = "fixture_isolation_probe"
        name = Required(str)

    db.generate_mapping(create_tables=True)
    with db_session:
        Isolated(name="mine")
    if backend.name == "sqlite":
        assert "test.db" in backend.url
        return
    base = Database()
    pk.bind_url(base, os.environ[ENV_VARS[backend.name]])
    try:
        with db_session:
            if backend.name == "postgres":
                rows = base.select(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_name = 'fixture_isolation_probe' AND table_schema = 'public'"
                )
            else:
                rows = base.select(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_name = 'fixture_isolation_probe' AND table_schema = 'test'"
                )
        assert rows == [0]
    finally:
        base.disconnect()


def test_redis_answers(redis_url: str, unique_prefix: str) -> None:
    """The Redis service named by PONYKIT_TEST_REDIS answers and keeps keys under a test's own prefix."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping()
        client.set(unique_prefix + "probe", b"1", px=5000)
        assert client.get(unique_prefix + "probe") == b"1"
    finally:
        client.delete(unique_prefix + "probe")
        client.close()
