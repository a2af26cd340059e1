"""The bounded pool on a real PostgreSQL streaming replica (``.ci/replica.sh``), and the replica fixtures.

The replica is restarted under the pool (a real server process stopped and started): the connections it
held die with it, and ``pre_ping`` must replace them without a session seeing an error.
"""

from __future__ import annotations

from typing import Any

import pytest
from pony.orm import Database, Required, db_session, select

from ponykit.binding import BoundedPool, PoolConfig, bind_url, parse_url, redact_url
from ponykit.binding._pool import make_bounded_pool

pytestmark = pytest.mark.backends("postgres")


def _mapped(url: str, *, create: bool, pool: PoolConfig | None = None) -> tuple[Database, Any]:
    db = Database()
    bind_url(db, url, pool=pool)

    class Item(db.Entity):  # type: ignore[name-defined]
        n = Required(int)

    db.generate_mapping(create_tables=create)
    return db, Item


def test_pool_on_the_replica_survives_a_replica_restart(backend: Any, replica_control: Any) -> None:
    primary, item = _mapped(backend.url, create=True)
    replica = None
    try:
        with db_session:
            for n in range(3):
                item(n=n)
        replica_control.wait_caught_up()
        replica, replica_item = _mapped(
            replica_control.url_for(backend), create=False, pool=PoolConfig(max_size=2, timeout=30)
        )
        pool = replica.provider.pool
        assert isinstance(pool, BoundedPool)
        with db_session:
            assert select(i for i in replica_item).count() == 3
            assert replica.select("SELECT pg_is_in_recovery()")[0] is True
            before = replica.select("SELECT pg_backend_pid()")[0]

        replica_control.stop()  # the server process goes: its connections die with it
        assert not replica_control.is_running()
        replica_control.start()

        with db_session:  # no error: pre_ping found the dead connection and replaced it
            assert select(i for i in replica_item).count() == 3
            assert replica.select("SELECT pg_backend_pid()")[0] != before
        assert pool.stats().replaced == 1

        replica_control.set_apply_delay(2000)
        with db_session:
            assert replica.select("SELECT current_setting('recovery_min_apply_delay')")[0] == "2s"
        with db_session:
            item(n=3)
        replica_control.wait_caught_up()  # waits out the delay
        with db_session:
            assert select(i for i in replica_item).count() == 4
    finally:
        if replica is not None:
            replica.disconnect()
            replica.provider.pool.close()
        primary.disconnect()


def test_replica_url_names_a_standby(replica_url: str) -> None:
    db = Database()
    bind_url(db, replica_url)
    try:
        with db_session:
            assert db.select("SELECT pg_is_in_recovery()")[0] is True
    finally:
        db.disconnect()


def test_a_bounded_pool_for_the_replica_made_from_the_primarys_database(
    backend: Any, replica_control: Any
) -> None:
    primary, _ = _mapped(backend.url, create=True)
    replica_kwargs = parse_url(replica_control.url_for(backend))[1]
    pool = make_bounded_pool(primary, PoolConfig(max_size=1), redact_url(replica_control.url), replica_kwargs)
    try:
        con, is_new = pool.connect()
        cursor = con.cursor()
        cursor.execute("SELECT pg_is_in_recovery()")
        assert cursor.fetchone()[0] is True
        assert not is_new  # new, but the pool ran the Database's on_connect callbacks itself already
        assert pool.stats().created == 1
        pool.release(con)
        assert pool.connect() == (con, False)  # kept and handed out again
        pool.release(con)
    finally:
        pool.close()
        primary.disconnect()
