"""ponykit.testing.CacheBackendContract run against ponykit's own backends: MemoryCache and RedisCache."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from ponykit.query.backends import MemoryCache, RedisCache
from ponykit.testing import CacheBackendContract, ManualClock


class TestMemoryCacheContract(CacheBackendContract):
    """MemoryCache, its expiry driven by an injected clock."""

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    def backend(self, clock: ManualClock) -> MemoryCache:
        return MemoryCache(timer=clock)

    @pytest.fixture
    def advance(self, clock: ManualClock) -> Callable[[float], None]:
        return clock.advance


class TestRedisCacheContract(CacheBackendContract):
    """RedisCache on the test Redis: entries expire on Redis's own clock, so the expiry test sleeps."""

    ttl_seconds = 0.3

    @pytest.fixture
    def backend(self, redis_url: str, unique_prefix: str) -> Iterator[RedisCache]:
        cache = RedisCache(redis_url, prefix=unique_prefix)
        yield cache
        keys = list(cache.client.scan_iter(match=unique_prefix + "*"))
        if keys:
            cache.client.delete(*keys)
