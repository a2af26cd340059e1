"""Caches shared by processes: one invalidation namespace per database (whatever the client options and
mapping version), a Redis restart from a snapshot never serves old entries, MemoryCache says it is per
process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from pony.orm import Database, Optional, Required, db_session, select
from pony.orm import sum as psum
from test_query_cache_stateful import other_client_options

import ponykit as pk
from ponykit.errors import ConfigurationError, MemoryCacheWarning
from ponykit.kit import get_kit
from ponykit.query import cached, cached_query, cached_select
from ponykit.query._generations import db_state
from ponykit.query.backends import MemoryCache, RedisCache


def sales(db: Database, url: str, cache: Any, *, version: int = 1, create: bool = True, **attach: Any) -> Any:
    """Bind ``db`` to ``url``, attach ``cache``, declare Sale (version 2 has a note) and map it (the
    first Database creates the table; Pony looks for tables in PostgreSQL's public schema only)."""
    pk.bind_url(db, url)
    pk.attach(db, cache=cache, **attach)

    class Sale(db.Entity):
        qty = Required(int)
        if version == 2:
            note = Optional(str, nullable=True)  # a column added by a migration: NULL for old rows

    db.generate_mapping(create_tables=create)
    return Sale


def test_namespace_is_the_database_not_the_client_options(
    backend: Any, redis_url: str, unique_prefix: str, tmp_path: Any
) -> None:
    """Two Databases on one database whose URLs differ in client options and whose mappings are two
    versions share invalidations (one namespace) but never entries (two entry namespaces)."""
    url_a, url_b = other_client_options(backend, tmp_path)
    db_a, db_b = Database(), Database()
    sale_b = sales(db_b, url_b, RedisCache(redis_url, prefix=unique_prefix), version=2)
    sale_a = sales(db_a, url_a, RedisCache(redis_url, prefix=unique_prefix), create=False)
    try:
        state_a, state_b = db_state(get_kit(db_a)), db_state(get_kit(db_b))
        assert state_a.namespace == state_b.namespace
        assert state_a.entry_namespace != state_b.entry_namespace
        with db_session:
            sale_a(qty=1)
        with db_session:
            assert cached_select(select(psum(s.qty) for s in sale_a)) == [1]
            assert cached_select(select(psum(s.qty) for s in sale_b)) == [1]
        with db_session:
            sale_b(qty=2, note="v2")  # the next version of the application writes
        with db_session:
            assert cached_select(select(psum(s.qty) for s in sale_a)) == [3]
        with db_session:
            sale_a(qty=4)
        with db_session:
            assert cached_select(select(psum(s.qty) for s in sale_b)) == [7]
    finally:
        db_a.disconnect()
        db_b.disconnect()


def test_cache_namespace_override(tmp_path: Any) -> None:
    """attach(cache_namespace=...) names the data: two Databases given one name share invalidations even
    where the server identity differs (here: two paths of SQLite files that stand for one database)."""
    cache = MemoryCache(ttl=None)
    db_a, db_b = Database(), Database()
    sale_a = sales(db_a, f"sqlite:///{tmp_path / 'a.db'}?create_db=1", cache, cache_namespace="shop")
    sale_b = sales(db_b, f"sqlite:///{tmp_path / 'b.db'}?create_db=1", cache, cache_namespace="shop")
    assert db_state(get_kit(db_a)).namespace == db_state(get_kit(db_b)).namespace == "n:shop"
    with db_session:
        assert cached_select(select(s.qty for s in sale_a)) == []
    with db_session:
        sale_b(qty=1)  # commits under the same name: invalidates db_a's entries
    with db_session:
        sale_a(qty=5)
        db_a.commit()
        assert cached_select(select(s.qty for s in sale_a)) == [5]
    with pytest.raises(ConfigurationError, match="cache_namespace"):
        pk.attach(Database("sqlite", ":memory:"), cache_namespace="")


# ---------------------------------------------------------------------------------------------------------
# Redis restarted from a snapshot (item 9)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of this test's own, persisting only when told to (SAVE), in a temp dir."""

    def __init__(self, directory: Any) -> None:
        self.port = _free_port()
        self.dir = str(directory)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        for _ in range(500):  # until it answers (loading the snapshot included), not a timed assertion
            try:
                client.ping()
                break
            except (redis.ConnectionError, redis.BusyLoadingError):
                self.proc.poll()
                assert self.proc.returncode is None, "redis-server exited"
                import time

                time.sleep(0.02)
        client.close()

    def command(self, *args: str) -> Any:
        """Run one command on a connection of its own."""
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def shutdown_nosave(self) -> None:
        """SHUTDOWN NOSAVE: a clean exit that saves nothing."""
        import redis

        client = redis.Redis.from_url(self.url)
        client.shutdown(nosave=True)  # redis-py takes the dropped connection as the answer
        client.close()

    def kill(self) -> None:
        """kill -9: nothing is saved, the next start loads the last snapshot."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def private_redis(tmp_path: Any) -> Iterator[PrivateRedis]:
    if not any(os.access(os.path.join(p, "redis-server"), os.X_OK) for p in os.environ["PATH"].split(":")):
        pytest.skip("redis-server is not on PATH")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


READER = textwrap.dedent(
    """
    import sys
    sys.path[:0] = [{src!r}, {tests!r}]
    from pony.orm import Database
    from pony.orm import select, sum as psum
    import ponykit as pk
    from ponykit.query.backends import RedisCache
    from test_query_cache_processes import sales
    db = Database()
    Sale = sales(db, {url!r}, RedisCache({redis!r}, prefix="app:", retry_interval=0.0), create=False)

    @pk.cached_query
    def total():
        return select(psum(s.qty) for s in Sale)

    print("ready", flush=True)
    for line in sys.stdin:
        print(total()[0], flush=True)
    """
)


@pytest.mark.parametrize("how", ["kill", "shutdown"])
def test_redis_restart_from_snapshot_serves_no_stale_entry(
    backend: Any, private_redis: PrivateRedis, how: str
) -> None:
    """Redis killed (or shut down without saving) and restarted from a snapshot taken before a commit:
    neither this process nor a second one that never saw the outage reads the old total, 0 of 20."""
    db = Database()
    sale = sales(db, backend.url, RedisCache(private_redis.url, prefix="app:", retry_interval=0.0))

    @cached_query
    def total() -> Any:
        return select(psum(s.qty) for s in sale)

    @cached(depends_on=[sale])
    def quantities() -> list[int]:
        with db_session:
            return sorted(select(s.qty for s in sale))

    here = os.path.dirname(__file__)
    source = READER.format(
        src=os.path.join(here, "..", "src"), tests=here, url=backend.url, redis=private_redis.url
    )
    other = subprocess.Popen(
        [sys.executable, "-c", source], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert other.stdin is not None and other.stdout is not None

    def other_reads() -> int:
        assert other.stdin is not None and other.stdout is not None
        other.stdin.write("read\n")
        other.stdin.flush()
        return int(other.stdout.readline())

    try:
        assert other.stdout.readline().strip() == "ready"
        with db_session:
            sale(qty=1)
        assert total() == [1] and quantities() == [1] and other_reads() == 1  # cached, in both processes
        private_redis.command("SAVE")  # a routine snapshot
        with db_session:
            sale(qty=10)  # committed, generation bumped in Redis after the snapshot
        assert total() == [11] and other_reads() == 11 and quantities() == [1, 10]
        if how == "kill":
            private_redis.kill()
        else:
            private_redis.shutdown_nosave()
            assert private_redis.proc is not None
            private_redis.proc.wait()
        private_redis.start()  # back from the snapshot: old generations and old entries together
        stale = 0
        for _ in range(10):  # the other process reads first: it never saw Redis fail
            stale += other_reads() != 11
            stale += total() != [11]
            stale += quantities() != [1, 10]
        assert stale == 0
        with db_session:
            sale(qty=100)  # invalidation still works after the reset
        assert other_reads() == 111 and total() == [111]
    finally:
        other.stdin.close()
        other.wait(timeout=30)
        db.disconnect()


# ---------------------------------------------------------------------------------------------------------
# MemoryCache is per process (item 11)


def test_memory_cache_warns_on_a_server_database(backend: Any, tmp_path: Any) -> None:
    """A MemoryCache on PostgreSQL/MariaDB warns once (other processes' commits never reach it); on a
    SQLite file or with single_process=True it does not."""
    for single_process in (False, True):
        db = Database()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # at attach() (the namespace is asked then) or first use
            cache = MemoryCache(single_process=single_process)
            sale = sales(db, backend.url, cache, create=not single_process)
            with db_session:
                cached_select(select(s.qty for s in sale))
                cached_select(select(s.qty for s in sale))
        ours = [w for w in caught if issubclass(w.category, MemoryCacheWarning)]
        expected = 1 if backend.name != "sqlite" and not single_process else 0
        assert len(ours) == expected, [str(w.message) for w in ours]
        if ours:
            assert "per-process" in str(ours[0].message) and "RedisCache" in str(ours[0].message)
        db.disconnect()


def test_memory_cache_in_memory_sqlite_does_not_warn() -> None:
    """The usual single-process case (SQLite :memory:, tests) stays quiet."""
    db = Database()
    sale = sales(db, "sqlite://:memory:", MemoryCache())
    with warnings.catch_warnings():
        warnings.simplefilter("error", MemoryCacheWarning)
        with db_session:
            sale(qty=1)
        with db_session:
            assert cached_select(select(s.qty for s in sale)) == [1]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only")
def test_memory_cache_warns_after_fork() -> None:
    """A MemoryCache created before fork() and used in the child warns there (once), not in the parent."""
    cache = MemoryCache()
    cache.generations(["x"])
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code
        code = 1
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cache.generations(["x"])
                cache.generations(["x"])
            ours = [w for w in caught if issubclass(w.category, MemoryCacheWarning)]
            code = 0 if len(ours) == 1 and "forked" in str(ours[0].message) else 2
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", MemoryCacheWarning)
        cache.generations(["x"])  # the parent is not forked


def test_generations_follow_tables_not_entity_names(backend: Any, tmp_path: Any) -> None:
    """Two mappings that name the entity of one table differently (a rename in the next version, another
    application) share its invalidations."""
    cache = MemoryCache(ttl=None, single_process=True)
    url_a, url_b = other_client_options(backend, tmp_path)
    db_a, db_b = Database(), Database()
    sale = sales(db_a, url_a, cache)
    pk.bind_url(db_b, url_b)
    pk.attach(db_b, cache=cache)

    class Purchase(db_b.Entity):
        _table_ = sale._table_
        qty = Required(int)

    db_b.generate_mapping(create_tables=False)
    try:
        with db_session:
            assert cached_select(select(psum(s.qty) for s in sale)) == [0]
        with db_session:
            Purchase(qty=3)
        with db_session:
            assert cached_select(select(psum(s.qty) for s in sale)) == [3]
    finally:
        db_a.disconnect()
        db_b.disconnect()


def test_redis_bump_epoch_makes_every_entry_unreachable(redis_url: str, unique_prefix: str) -> None:
    """bump_epoch() (the fail-safe when an invalidation cannot be named) reaches every process: another
    RedisCache on the same prefix sees a new epoch and no old entry."""
    one, two = RedisCache(redis_url, prefix=unique_prefix), RedisCache(redis_url, prefix=unique_prefix)
    gens = one.generations(["x"])
    assert gens is not None
    one.set(("k", gens), "v")
    assert two.get(("k", two.generations(["x"]))) == "v"
    one.bump_epoch()
    assert two.generations(["x"]) != gens
    assert two.get(("k", two.generations(["x"]))) is pk.query.backends.MISSING
