"""Cache backends: MemoryCache expiry and bounds, RedisCache sharing, outages and stampede locks."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from decimal import Decimal
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import Database, Required, db_session, select

import ponykit as pk
from ponykit.errors import ConfigurationError
from ponykit.query import _plain as _codec
from ponykit.query import cached, cached_select
from ponykit.query._generations import db_state
from ponykit.query.backends import MISSING, CacheBackend, MemoryCache, RedisCache


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_ttl_expires_with_injected_clock() -> None:
    """Entries expire when the injected clock passes their ttl, per-entry ttl overriding the default."""
    clock = Clock()
    cache = MemoryCache(ttl=10, timer=clock)
    cache.set(("a",), 1)
    cache.set(("b",), 2, ttl=100)
    clock.now += 9.9
    assert cache.get(("a",)) == 1
    clock.now += 0.2
    assert cache.get(("a",)) is MISSING
    assert cache.get(("b",)) == 2
    clock.now += 100
    assert cache.get(("b",)) is MISSING


def test_memory_is_bounded_lru() -> None:
    """Beyond maxsize the least recently used entry is evicted."""
    cache = MemoryCache(maxsize=2, ttl=None)
    cache.set(("a",), 1)
    cache.set(("b",), 2)
    assert cache.get(("a",)) == 1
    cache.set(("c",), 3)
    assert cache.get(("b",)) is MISSING
    assert cache.get(("a",)) == 1
    assert len(cache) == 2


def test_memory_generations_and_options() -> None:
    """Generations start at 0 and only move forward; bad options raise ConfigurationError."""
    cache = MemoryCache()
    assert isinstance(cache, CacheBackend)
    assert cache.generations(["x", "y"]) == (0, 0)
    cache.bump(["x"])
    cache.bump(["x"])
    assert cache.generations(["x", "y"]) == (2, 0)
    cache.clear()
    assert cache.generations(["x"]) == (2,)
    with pytest.raises(ConfigurationError):
        MemoryCache(maxsize=0)
    with pytest.raises(ConfigurationError):
        MemoryCache(ttl=-1)


def test_cached_select_ttl_with_injected_clock(db: Database) -> None:
    """A cached_select entry is served until its ttl passes on the injected clock, then recomputed."""

    class Item(db.Entity):
        name = Required(str)

    clock = Clock()
    kit = pk.attach(db, cache=MemoryCache(ttl=60, timer=clock))
    db.generate_mapping(create_tables=True)
    runs: list[str] = []
    kit.add_execute_listener(lambda d, sql, *a: runs.append(sql) if "SELECT" in sql.upper() else None)
    with db_session:
        Item(name="a")
    for _ in range(2):
        with db_session:
            assert [i.name for i in cached_select(Item.select(), ttl=5)] == ["a"]
    assert len(runs) == 1
    clock.now += 6
    with db_session:
        cached_select(Item.select(), ttl=5)
    assert len(runs) == 2


def test_memory_threads_compute_once() -> None:
    """Threads missing one key at once share a single computation."""
    cache = MemoryCache()
    started = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def compute() -> tuple[Any, bool]:
        calls.append(1)
        started.set()
        release.wait(5)
        return 42, True

    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_compute(("k",), compute)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    started.wait(5)
    release.set()
    for t in threads:
        t.join()
    assert calls == [1]
    assert sorted(r[1] for r in results) == [False] + [True] * 7
    assert {r[0] for r in results} == {42}


plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.datetimes()
    | st.dates()
    | st.uuids(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(plain_values)
def test_codec_round_trips_plain_data(value: Any) -> None:
    """Plain data comes back from the shared-cache codec with its types (tuples, Decimal, datetime ...)."""
    back = _codec.decode(_codec.encode(value))
    assert back == value
    assert type(back) is type(value)


def test_codec_rejects_objects() -> None:
    """Arbitrary objects are refused with a TypeError naming the type; nothing is pickled."""
    with pytest.raises(TypeError, match="object"):
        _codec.encode(object())
    assert _codec.decode(_codec.encode(dt.timedelta(days=1, seconds=2))) == dt.timedelta(days=1, seconds=2)
    assert _codec.decode(_codec.encode(float("inf"))) == float("inf")
    assert _codec.decode(_codec.encode(2**70)) == 2**70


# ---------------------------------------------------------------------------------------------------------
# Redis


def make_redis(redis_url: str, prefix: str, **kwargs: Any) -> RedisCache:
    return RedisCache(redis_url, prefix=prefix, **kwargs)


def test_redis_shares_entries_and_generations(redis_url: str, unique_prefix: str) -> None:
    """Two RedisCache instances (as two processes) see each other's entries and bumps."""
    a = make_redis(redis_url, unique_prefix)
    b = make_redis(redis_url, unique_prefix)
    value = {"n": (1, Decimal("2.5"), dt.date(2020, 1, 2), uuid.UUID(int=5), b"x")}
    a.set(("k", 1), value)
    assert b.get(("k", 1)) == value
    g0 = a.generations(["E"])
    assert g0 == b.generations(["E"])
    b.bump(["E"])
    g1 = a.generations(["E"])
    assert g0 is not None
    assert g1 is not None
    assert g1[1] == g0[1] + 1
    a.clear()
    assert b.get(("k", 1)) is MISSING
    assert "redis://" not in repr(a)


def test_redis_lost_generations_never_repeat(redis_url: str, unique_prefix: str) -> None:
    """A generation counter lost from Redis restarts at a random value, not at a value seen before."""
    cache = make_redis(redis_url, unique_prefix)
    before = cache.generations(["E"])
    cache.client.delete(unique_prefix + "g:E", unique_prefix + "epoch")
    after = cache.generations(["E"])
    assert before is not None
    assert after is not None
    assert before != after


def test_redis_unreachable_goes_to_database(
    db: Database, redis_url: str, unique_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis unreachable, cached calls run against the database, log one warning, never fail."""

    class Item(db.Entity):
        name = Required(str)

    clock = Clock()
    down = RedisCache("redis://127.0.0.1:1/0", prefix=unique_prefix, socket_timeout=0.2, timer=clock)
    pk.attach(db, cache=down)
    db.generate_mapping(create_tables=True)
    with db_session:
        Item(name="a")

    @cached(depends_on=[Item])
    def names() -> list[str]:
        with db_session:
            return sorted(select(i.name for i in Item))

    with caplog.at_level(logging.WARNING, logger="ponykit.cache"):
        for _ in range(3):
            with db_session:
                assert [i.name for i in cached_select(Item.select())] == ["a"]
            assert names() == ["a"]
        with db_session:
            Item(name="b")
        with db_session:
            assert sorted(i.name for i in cached_select(Item.select())) == ["a", "b"]
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    assert "127.0.0.1:1" not in warnings[0].getMessage()
    assert names.cache_info().bypassed == 3  # type: ignore[attr-defined]


def test_redis_recovery_never_serves_entries_from_before_the_outage(
    db: Database, redis_url: str, unique_prefix: str
) -> None:
    """A process that lost an invalidation during an outage bumps the epoch when Redis is back."""

    class Item(db.Entity):
        name = Required(str)

    clock = Clock()
    mine = RedisCache(redis_url, prefix=unique_prefix, timer=clock, retry_interval=1.0)
    other = RedisCache(redis_url, prefix=unique_prefix)  # another process, same Redis
    pk.attach(db, cache=mine)
    db.generate_mapping(create_tables=True)
    with db_session:
        Item(name="a")
    with db_session:
        cached_select(Item.select())  # an entry for ['a'], shared through Redis
    names = db_state(pk.get_kit(db)).gen_names(["Item"])
    before = other.generations(names)
    real_client = mine.client
    mine.client = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    with db_session:
        Item(name="b")  # committed while this process cannot publish the invalidation
    with db_session:
        assert len(cached_select(Item.select())) == 2  # served by the database meanwhile
    mine.client = real_client
    clock.now += 2  # retry interval passed: Redis is tried again
    with db_session:
        assert sorted(i.name for i in cached_select(Item.select())) == ["a", "b"]
    # The lost bump is made up for by the epoch: the other process no longer reaches the ['a'] entry.
    after = other.generations(names)
    assert before is not None
    assert after is not None
    assert after[0] == before[0] + 1


def test_redis_lock_makes_other_process_wait(redis_url: str, unique_prefix: str) -> None:
    """While one process computes a key, another polls and takes its result instead of computing."""
    a = make_redis(redis_url, unique_prefix)
    b = make_redis(redis_url, unique_prefix, poll_interval=0.005)
    computing = threading.Event()
    finish = threading.Event()
    calls: list[str] = []

    def slow() -> tuple[Any, bool]:
        calls.append("a")
        computing.set()
        finish.wait(5)
        return "value", True

    def other() -> tuple[Any, bool]:
        calls.append("b")
        return "other", True

    t = threading.Thread(target=lambda: a.get_or_compute(("k",), slow))
    t.start()
    computing.wait(5)
    result: list[Any] = []
    t2 = threading.Thread(target=lambda: result.append(b.get_or_compute(("k",), other)))
    t2.start()
    finish.set()
    t.join()
    t2.join()
    assert calls == ["a"]
    assert result == [("value", True)]


def test_redis_lock_times_out_instead_of_deadlocking(redis_url: str, unique_prefix: str) -> None:
    """A lock left by a dead process only delays others until it expires; they then compute."""
    a = make_redis(redis_url, unique_prefix, lock_timeout=0.2, poll_interval=0.01)
    key = ("k",)
    lock_key = a._entry_key(key).replace(":v:", ":l:", 1)
    a.client.set(lock_key, "dead-process", px=200)
    assert a.get_or_compute(key, lambda: ("mine", True)) == ("mine", False)
