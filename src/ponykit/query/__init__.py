"""Query helpers: cached selects and cached service functions (pagination and prefetch join later)."""

from __future__ import annotations

from .backends import CacheBackend, MemoryCache, RedisCache
from .cache import CacheInfo, cached, cached_select

__all__ = ["CacheBackend", "CacheInfo", "MemoryCache", "RedisCache", "cached", "cached_select"]
